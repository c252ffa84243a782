#!/usr/bin/env bash
# Every repository path a document names must exist. Checks `code spans`
# that look like paths (a slash, or a known file suffix) against the
# repository root and markdown link targets against the document's folder.
# Usage: docs/check-paths.sh [FILE.md ...] (default: docs/*.md README.md
# bench/results/README.md). Exit 1 if any path is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=(docs/*.md README.md bench/results/README.md)
missing=0
suffix='\.(c|cc|cpp|h|cu|cuh|td|fbs|py|mjs|sh|json|jsonl|md|txt|test|mlir|png|safetensors)$'
for doc in "${files[@]}"; do
  [[ -f $doc ]] || continue
  dir=$(dirname "$doc")
  # Code spans: no spaces, not options, not placeholders or globs.
  while IFS= read -r span; do
    span=${span%/}
    # One {a,b} group stands for each of its members.
    paths=("$span")
    if [[ $span =~ ^([^{}]*)\{([^{}]*)\}([^{}]*)$ ]]; then
      paths=()
      IFS=, read -ra parts <<<"${BASH_REMATCH[2]}"
      for part in "${parts[@]}"; do
        paths+=("${BASH_REMATCH[1]}$part${BASH_REMATCH[3]}")
      done
    fi
    for path in "${paths[@]}"; do
      [[ $path == */* || $path =~ $suffix ]] || continue
      [[ $path =~ [\<\>\*\{\}\ =:\"] || $path == -* || $path == http* ]] && continue
      # Build outputs, files a command writes, schema and npm package names,
      # the OpenAI API's endpoints.
      [[ $path == build/* || $path == @* || $path == */OUT.json || $path == moe-hardware-profile/* ||
         $path == .* || $path == /v1/* ]] && continue
      # Names of generated or user files, not of files in the tree.
      case $path in plan_generated.h | tokenizer.json | tokenizer_config.json | chat_template.jinja | generation_config.json | answers.jsonl | stats.json | results.json) continue ;; esac
      if [[ $path == */* ]]; then
        [[ -e $path ]] || { echo "$doc: \`$path\` does not exist"; missing=1; }
      else # a bare file name, named beside its folder: somewhere in the tree
        git ls-files --error-unmatch "*/$path" "$path" >/dev/null 2>&1 ||
          [[ -n $(find . -path ./build -prune -o -name "$path" -print -quit) ]] ||
          { echo "$doc: no file \`$path\` in the tree"; missing=1; }
      fi
    done
  done < <(grep -o '`[^`]*`' "$doc" | tr -d '`')
  # Markdown links and images, relative to the document.
  while IFS= read -r target; do
    target=${target%%#*}
    [[ -z $target || $target == http* ]] && continue
    [[ -e $dir/$target ]] || { echo "$doc: link ($target) does not exist"; missing=1; }
  done < <(grep -o '\]([^)]*)' "$doc" | sed 's/^](//; s/)$//')
done
exit $missing
