#!/usr/bin/env bash
# Pack what the GPU check needs on the lent machine (the data from ../shared/data and the wheels that
# machine lacks) into chunks that each fit one device call (64 MiB per call, working tree included).
#
#   bash scripts/gpu_pack.sh                 # T91 BSD200 Set5 Set14 BSD100 video + av, onnxslim, onnxconverter-common
#   bash scripts/gpu_pack.sh --no-bsd100     # one chunk fewer (BSD100 is 27 MB); sr-eval then skips BSD100
#   bash scripts/gpu_pack.sh --ort-gpu       # + onnxruntime-gpu (255.6 MB: five more calls; PyPI's build likely CUDA 12)
#
# Writes gpu_carry/c0 ... gpu_carry/cN (ignored by git), each one part of one tar plus unpack.sh.
# Then, with no pause between the calls (the machine goes back after ~30 s idle), one device call per
# chunk, the last one running the first half of the check (see README.md, "GPU check"):
#   carry ["gpu_carry/c0"]  command: bash gpu_carry/c0/unpack.sh
#   ...
#   carry ["gpu_carry/cN"]  command: bash gpu_carry/cN/unpack.sh && bash scripts/gpu_run.sh tests,train 560
#   carry []                command: bash scripts/gpu_run.sh eval,bench 520
# unpack.sh keeps each chunk in /tmp/gpu_carry_parts on that machine and, once all are there, checks
# the bundle's sha256 and unpacks it into /tmp/gpu_carry/{data,wheels}. A reply with "warm": false
# means a fresh machine: start again from c0.
set -euo pipefail
data=""
sets=(T91 BSD200 Set5 Set14 BSD100)
wheels=(av onnxslim onnxconverter-common)
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --no-bsd100) sets=(T91 BSD200 Set5 Set14); shift ;;
    --no-av) wheels=(onnxslim onnxconverter-common); shift ;;
    --ort-gpu) wheels+=(onnxruntime-gpu); shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "gpu_pack: unknown option $1" >&2; exit 2 ;;
  esac
done
root=$(git rev-parse --show-toplevel)
cd "$root"
data=${data:-$root/../shared/data}
[ -d "$data" ] || { echo "gpu_pack: no data folder $data (--data DIR)" >&2; exit 2; }
# per call: 64 MiB in all, minus the working tree that travels with it (tracked + untracked files)
tree_kib=$( (git ls-files -z --cached --others --exclude-standard | du -c --files0-from=- -k 2>/dev/null || echo 0) | tail -1 | cut -f1)
chunk_mib=${CHUNK_MIB:-$(( 62 - tree_kib / 1024 ))}
[ "$chunk_mib" -ge 8 ] || { echo "gpu_pack: the working tree (${tree_kib} KiB) leaves no room for data" >&2; exit 2; }
PY=${PYTHON:-python3}

rm -rf gpu_carry/c* gpu_carry/stage
mkdir -p gpu_carry/stage/data gpu_carry/wheels-cache
for s in "${sets[@]}"; do
  [ -d "$data/$s" ] || { echo "gpu_pack: $data/$s missing" >&2; exit 2; }
  cp -r "$data/$s" gpu_carry/stage/data/
done
if [ -f "$data/video/chaplin.mp4" ]; then mkdir -p gpu_carry/stage/data/video && cp "$data/video/chaplin.mp4" gpu_carry/stage/data/video/; fi
# cp312 x86_64 wheels for the GPU machine (Python 3.12, torch 2.11 + CUDA 13); cached between packs
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d gpu_carry/wheels-cache "${wheels[@]}"
mkdir -p gpu_carry/stage/wheels
for w in "${wheels[@]}"; do
  stem=$(echo "$w" | tr - _)
  f=$(ls -t gpu_carry/wheels-cache/"$stem"-*.whl 2>/dev/null | head -1)
  [ -n "$f" ] || { echo "gpu_pack: no wheel for $w" >&2; exit 2; }
  cp "$f" gpu_carry/stage/wheels/
done

tar -C gpu_carry/stage -cf gpu_carry/bundle.tar data wheels
sum=$(sha256sum gpu_carry/bundle.tar | cut -c1-64)
total=$(stat -c %s gpu_carry/bundle.tar)
split -b "${chunk_mib}M" -d -a 2 gpu_carry/bundle.tar gpu_carry/part
rm -rf gpu_carry/stage gpu_carry/bundle.tar
parts=(gpu_carry/part*)
n=${#parts[@]}
for i in "${!parts[@]}"; do
  d=gpu_carry/c$i
  mkdir -p "$d"
  mv "${parts[$i]}" "$d/"
  cat > "$d/unpack.sh" <<UNPACK
#!/usr/bin/env bash
# On the GPU machine: store this chunk ($((i + 1)) of $n); once all $n are there, unpack into /tmp/gpu_carry.
set -e
mkdir -p /tmp/gpu_carry_parts
cp "\$(dirname "\$0")"/part* /tmp/gpu_carry_parts/
have=\$(ls /tmp/gpu_carry_parts/part* | wc -l)
if [ "\$have" -lt $n ]; then echo "gpu_carry: chunk \$have of $n stored"; exit 0; fi
cat /tmp/gpu_carry_parts/part* > /tmp/gpu_carry_bundle.tar
echo "$sum  /tmp/gpu_carry_bundle.tar" | sha256sum -c --quiet || { echo "gpu_carry: bundle corrupt: start again from c0"; rm -rf /tmp/gpu_carry_parts /tmp/gpu_carry_bundle.tar; exit 1; }
rm -rf /tmp/gpu_carry && mkdir -p /tmp/gpu_carry && tar -C /tmp/gpu_carry -xf /tmp/gpu_carry_bundle.tar
rm -rf /tmp/gpu_carry_parts /tmp/gpu_carry_bundle.tar
echo "gpu_carry: unpacked into /tmp/gpu_carry:"; ls /tmp/gpu_carry/data /tmp/gpu_carry/wheels
UNPACK
done
echo "gpu_pack: $(( total / 1048576 )) MiB (${sets[*]} video; wheels ${wheels[*]}) in $n chunk(s) of <= ${chunk_mib} MiB:"
du -sh gpu_carry/c*
echo "device calls, back to back:"
for i in $(seq 0 $((n - 1))); do
  if [ "$i" -lt $((n - 1)) ]; then
    echo "  carry [\"gpu_carry/c$i\"]  command: bash gpu_carry/c$i/unpack.sh  (timeout_s 120)"
  else
    echo "  carry [\"gpu_carry/c$i\"]  command: bash gpu_carry/c$i/unpack.sh && bash scripts/gpu_run.sh tests,train 560  (timeout_s 590)"
  fi
done
echo "  carry []  command: bash scripts/gpu_run.sh eval,bench 520  (timeout_s 550)"
