#!/usr/bin/env bash
# A mini Google Speech Commands v0.02 from synthesised speech: the 35 command words spoken by
# espeak-ng in 20 variants each (5 voices x 2 speeds x 2 pitches), converted by sox to 16 kHz
# 16-bit mono WAV, in the v0.02 layout. validation_list.txt holds one voice, testing_list.txt
# another, so the splits never share a voice. Installs espeak-ng and sox if they are missing.
# Usage: make_gsc_mini.sh OUT_DIR
set -euo pipefail
out=${1:?usage: make_gsc_mini.sh OUT_DIR}
if [ -f "$out/testing_list.txt" ]; then exit 0; fi
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    echo "installing espeak-ng and sox"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq espeak-ng sox >/dev/null
fi
words="backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no off on one right seven sheila six stop three tree two up visual wow yes zero"
voices=(en-us en+m1 en+f2 en+m3 en+f4)
speeds=(130 175)
pitches=(35 65)
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "${out%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for word in $words; do
    mkdir -p "$tmp/$word"
    for v in "${!voices[@]}"; do
        speaker=$(printf 'e5%06x' "$v")
        k=0
        for speed in "${speeds[@]}"; do
            for pitch in "${pitches[@]}"; do
                espeak-ng -v "${voices[$v]}" -s "$speed" -p "$pitch" -w "$tmp/raw.wav" "$word"
                sox -q "$tmp/raw.wav" -r 16000 -b 16 -c 1 -e signed-integer "$tmp/$word/${speaker}_nohash_$k.wav"
                k=$((k + 1))
            done
        done
    done
done
rm -f "$tmp/raw.wav"
(cd "$tmp" && ls -1 */e5000003_nohash_*.wav | sort > validation_list.txt && ls -1 */e5000004_nohash_*.wav | sort > testing_list.txt)
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $(find "$out" -name '*.wav' | wc -l) clips to $out"
