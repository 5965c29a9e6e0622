// `collie completion bash|zsh`: a shell completion script made from collie's own command tree
// (groups, commands, options), completing VDI names from the cluster the command line points at.

import type { Command } from 'commander';

/** Every command path ("vdi lock list") with its options, from the live command tree. */
function walk(cmd: Command, prefix: string[], out: Array<{ path: string[]; subs: string[]; opts: string[] }>): void {
  const subs = cmd.commands.map((c) => c.name());
  const opts = cmd.options.flatMap((o) => [o.short, o.long].filter((x): x is string => !!x));
  out.push({ path: prefix, subs, opts: [...opts, '--help'] });
  for (const c of cmd.commands) walk(c, [...prefix, c.name()], out);
}

/** The script for bash (zsh loads it through bashcompinit). */
export function completionScript(program: Command, shell: 'bash' | 'zsh'): string {
  const nodes: Array<{ path: string[]; subs: string[]; opts: string[] }> = [];
  walk(program, [], nodes);
  const cases = nodes.map((n) => `    "${n.path.join(' ')}") subs="${n.subs.join(' ')}"; opts="${n.opts.join(' ')}";;`).join('\n');
  const bash = `# collie completion (${shell}): commands, options, and VDI names read from the cluster
_collie() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w i addr=() subs opts
  # the command path typed so far (words that are not options), and -a/-p to ask the same sheep
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in
      -a|--address|-p|--port|-k|--key) addr+=("$w" "\${COMP_WORDS[i+1]}"); i=$((i + 1));;
      -*) ;;
      *) case " $subs_all " in *" $w "*) path="\${path:+$path }$w";; esac;;
    esac
  done
  case "$path" in
${cases}
    *) subs=""; opts="";;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -n "$subs" ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  elif [[ "$path" == vdi\\ * ]]; then
    # raw listing: the name is the second field, spaces in it escaped with a backslash
    local IFS=$'\\n' names n
    names=$("\${COMP_WORDS[0]}" vdi list -r "\${addr[@]}" 2>/dev/null | sed -E 's/^[^ ]+ ((\\\\.|[^ \\\\])+) .*/\\1/; s/\\\\(.)/\\1/g' | sort -u)
    COMPREPLY=()
    for n in $(compgen -W "$names" -- "$cur"); do COMPREPLY+=("\${n// /\\\\ }"); done
  fi
}
subs_all="${[...new Set(nodes.flatMap((n) => n.subs))].join(' ')}"
complete -F _collie collie
`;
  return shell === 'zsh' ? `autoload -U +X bashcompinit && bashcompinit\n${bash}` : bash;
}
