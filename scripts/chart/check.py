"""Manifest checks of scripts/validate-chart.sh that need a YAML parser.

Subcommands (each prints one PASS or FAIL line per object or comparison and
exits non-zero when anything failed):

  k8s VERSION FILE...     every object validated strictly against the
                          Kubernetes VERSION schemas of kubernetes-validate;
                          custom-resource kinds it cannot know are skipped by
                          name, any other unknown kind fails.
  crd CRD FILE...         every FanoutRoute in FILE validated against the
                          openAPIV3Schema of CRD (the served version it
                          names), unknown fields refused as `kubectl apply`
                          does with strict field validation, and the CRD's
                          CEL rules (x-kubernetes-validations) evaluated.
  rbac EXPECTED RENDERED  the rules of the ClusterRole in EXPECTED equal
                          those of the ClusterRole in RENDERED.
  same A B                A and B hold the same objects (parsed, in order).
  redis-ca RENDERED SECRET
                          the operator Deployment in RENDERED has env
                          FANOUT_REDIS_CA_FILE and FANOUT_REDIS_CA_SECRET
                          exactly when SECRET is not empty: then the
                          Secret SECRET (key ca.crt) mounted read-only and
                          FANOUT_REDIS_CA_FILE naming the mounted file;
                          otherwise no CA volume at all.
"""

import copy
import difflib
import sys

import celpy
import jsonschema
import kubernetes_validate
import yaml

# Kinds served by CRDs, not by Kubernetes itself: kubernetes-validate has no
# schema for them. FanoutRoute is checked against its own CRD instead.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("fanout.dev/v1alpha1", "FanoutRoute"),
}


def load(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def name_of(obj):
    meta = obj.get("metadata") or {}
    return "%s/%s" % (obj.get("kind"), meta.get("name"))


def check_k8s(version, paths):
    failed = 0
    for path in paths:
        for obj in load(path):
            what = "%s %s" % (path, name_of(obj))
            if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
                print("SKIP %s: custom resource, no built-in schema" % what)
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                print("PASS %s valid for Kubernetes %s (strict)" % (what, version))
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                print("FAIL %s invalid for Kubernetes %s at %s: %s" % (what, version, where, e.message))
                failed += 1
            except kubernetes_validate.SchemaNotFoundError as e:
                print("FAIL %s: %s" % (what, e.message))
                failed += 1
    return failed


def strict_schema(schema):
    """A copy of a structural schema, as JSON Schema, where objects with
    listed properties refuse other fields, unless the schema preserves
    unknown fields.
    Kubernetes prunes (or, with strict field validation, refuses) unknown
    fields; plain JSON Schema would accept them silently."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        # OpenAPI's `nullable: true` is JSON Schema's type list with "null".
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties", "definitions"):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                walk(child)

    walk(schema)
    # apiVersion, kind and metadata are Kubernetes' own; the CRD schema only
    # describes them loosely.
    props = schema.setdefault("properties", {})
    for key in ("apiVersion", "kind", "metadata"):
        props.setdefault(key, {})
    return schema


def cel_errors(schema, data, path, env):
    """Evaluates the x-kubernetes-validations rules of `schema` and of every
    schema below it against the matching parts of `data`, as the API server
    does. Returns (errors, skipped): messages of failed rules, and rules that
    cannot be evaluated offline (transition rules, Kubernetes-only library
    functions)."""
    errors, skipped = [], []
    if not isinstance(schema, dict):
        return errors, skipped
    for rule in schema.get("x-kubernetes-validations") or []:
        expr = rule["rule"]
        where = path or "(root)"
        if "oldSelf" in expr:
            skipped.append("%s: %s (transition rule)" % (where, expr))
            continue
        try:
            program = env.program(env.compile(expr))
            result = program.evaluate({"self": celpy.json_to_cel(data)})
        except Exception as e:  # celpy raises several types for unknown functions
            skipped.append("%s: %s (%s)" % (where, expr, type(e).__name__))
            continue
        if isinstance(result, Exception) or not bool(result):
            errors.append("%s: %s (rule: %s)" % (where, rule.get("message", "failed"), expr))
    if isinstance(data, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in data.items():
            child = props.get(key, extra if isinstance(extra, dict) else None)
            e, s = cel_errors(child, value, "%s.%s" % (path, key) if path else key, env)
            errors += e
            skipped += s
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(data):
            e, s = cel_errors(schema["items"], value, "%s[%d]" % (path, i), env)
            errors += e
            skipped += s
    return errors, skipped


def check_crd(crd_path, paths):
    crds = [d for d in load(crd_path) if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        print("FAIL %s: expected one CustomResourceDefinition, found %d" % (crd_path, len(crds)))
        return 1
    spec = crds[0]["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    raw = {"%s/%s" % (group, v["name"]): v["schema"]["openAPIV3Schema"] for v in spec["versions"] if v.get("served")}
    schemas = {version: strict_schema(schema) for version, schema in raw.items()}
    env = celpy.Environment()
    failed = 0
    checked = 0
    for path in paths:
        for obj in load(path):
            what = "%s %s" % (path, name_of(obj))
            if obj.get("kind") != kind:
                continue
            checked += 1
            schema = schemas.get(obj.get("apiVersion"))
            if schema is None:
                print("FAIL %s: apiVersion %s is not served by the CRD" % (what, obj.get("apiVersion")))
                failed += 1
                continue
            validator = jsonschema.Draft7Validator(schema)
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
            if errors:
                for e in errors:
                    where = ".".join(str(p) for p in e.path) or "(root)"
                    print("FAIL %s at %s: %s" % (what, where, e.message))
                failed += 1
                continue
            rule_errors, rule_skipped = cel_errors(raw[obj["apiVersion"]], obj, "", env)
            for message in rule_skipped:
                print("SKIP %s CEL rule not evaluated offline at %s" % (what, message))
            if rule_errors:
                for message in rule_errors:
                    print("FAIL %s CEL rule at %s" % (what, message))
                failed += 1
            else:
                print("PASS %s valid against the CRD's openAPIV3Schema and CEL rules" % what)
    if checked == 0:
        print("FAIL no %s found in %s" % (kind, " ".join(paths)))
        failed += 1
    return failed


def cluster_role_rules(path):
    roles = [d for d in load(path) if d.get("kind") == "ClusterRole"]
    if len(roles) != 1:
        raise SystemExit("FAIL %s: expected one ClusterRole, found %d" % (path, len(roles)))
    return roles[0].get("rules") or []


def check_rbac(expected_path, rendered_path):
    expected = cluster_role_rules(expected_path)
    rendered = cluster_role_rules(rendered_path)
    if expected == rendered:
        print("PASS chart ClusterRole rules equal %s (%d rules)" % (expected_path, len(expected)))
        return 0
    print("FAIL chart ClusterRole rules differ from %s:" % expected_path)
    diff = difflib.unified_diff(
        yaml.safe_dump(expected, sort_keys=False).splitlines(),
        yaml.safe_dump(rendered, sort_keys=False).splitlines(),
        expected_path,
        "chart",
        lineterm="",
    )
    for line in diff:
        print("    " + line)
    return 1


def check_same(a_path, b_path):
    a, b = load(a_path), load(b_path)
    if a == b:
        print("PASS %s and %s hold the same %d objects" % (a_path, b_path, len(a)))
        return 0
    print("FAIL %s and %s differ:" % (a_path, b_path))
    diff = difflib.unified_diff(
        yaml.safe_dump_all(a, sort_keys=True).splitlines(),
        yaml.safe_dump_all(b, sort_keys=True).splitlines(),
        a_path,
        b_path,
        lineterm="",
    )
    for line in list(diff)[:60]:
        print("    " + line)
    return 1


REDIS_CA_ENV = ("FANOUT_REDIS_CA_FILE", "FANOUT_REDIS_CA_SECRET")


def redis_ca_problems(deployment, secret):
    """What is wrong with the operator Deployment's Redis CA wiring."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    volumes = pod.get("volumes") or []
    mounts = container.get("volumeMounts") or []
    if not secret:
        problems = ["env %s set" % name for name in REDIS_CA_ENV if name in env]
        problems += ["volume %s mounts the CA" % v["name"] for v in volumes if v["name"] == "redis-ca"]
        return problems
    problems = ["env %s missing" % name for name in REDIS_CA_ENV if name not in env]
    if problems:
        return problems
    if env["FANOUT_REDIS_CA_SECRET"] != secret:
        problems.append("FANOUT_REDIS_CA_SECRET is %r, want %r" % (env["FANOUT_REDIS_CA_SECRET"], secret))
    ca_file = env["FANOUT_REDIS_CA_FILE"] or ""
    directory, _, file_name = ca_file.rpartition("/")
    mount = next((m for m in mounts if m["mountPath"] == directory), None)
    if mount is None:
        return problems + ["nothing mounted at %s (FANOUT_REDIS_CA_FILE=%s)" % (directory, ca_file)]
    if mount.get("readOnly") is not True:
        problems.append("the CA mount %s is not read-only" % directory)
    volume = next((v for v in volumes if v["name"] == mount["name"]), {})
    source = volume.get("secret") or {}
    if source.get("secretName") != secret:
        problems.append("volume %s is not Secret %r: %r" % (mount["name"], secret, volume))
    elif source.get("items") != [{"key": "ca.crt", "path": file_name}]:
        problems.append("volume %s does not project key ca.crt to %s: %r" % (mount["name"], file_name, source.get("items")))
    return problems


def check_redis_ca(rendered_path, secret):
    operators = [
        obj for obj in load(rendered_path)
        if obj.get("kind") == "Deployment"
        and (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    if len(operators) != 1:
        print("FAIL %s: %d operator Deployments, want 1" % (rendered_path, len(operators)))
        return 1
    problems = redis_ca_problems(operators[0], secret)
    want = ("Secret %s mounted, FANOUT_REDIS_CA_FILE and FANOUT_REDIS_CA_SECRET set" % secret
            if secret else "no CA Secret, FANOUT_REDIS_CA_FILE and FANOUT_REDIS_CA_SECRET unset")
    if problems:
        print("FAIL %s: want %s: %s" % (rendered_path, want, "; ".join(problems)))
        return 1
    print("PASS %s: %s" % (rendered_path, want))
    return 0


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "k8s" and len(args) >= 2:
        failed = check_k8s(args[0], args[1:])
    elif cmd == "crd" and len(args) >= 2:
        failed = check_crd(args[0], args[1:])
    elif cmd == "rbac" and len(args) == 2:
        failed = check_rbac(args[0], args[1])
    elif cmd == "same" and len(args) == 2:
        failed = check_same(args[0], args[1])
    elif cmd == "redis-ca" and len(args) == 2:
        failed = check_redis_ca(args[0], args[1])
    else:
        raise SystemExit(__doc__)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
