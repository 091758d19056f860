package main

import (
	"io"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask the program itself for candidates: urfave/cli
// answers "WORDS… --generate-bash-completion" with the subcommands, or with
// the flags when the word being completed starts with "-". The words typed are
// passed as arguments, never evaluated by the shell.
const bashCompletion = `# bash completion for qwen-appliance.
# Load it now:        source <(qwen-appliance completion bash)
# Or for every shell: qwen-appliance completion bash > /etc/bash_completion.d/qwen-appliance
_qwen_appliance() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local -a req=("${COMP_WORDS[@]:0:COMP_CWORD}")
	# The program lists flags for a word starting with "-"; "-" itself,
	# never "--", which would end the flags.
	[[ $cur == -* ]] && req+=(-)
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$("${req[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _qwen_appliance qwen-appliance
`

const zshCompletion = `#compdef qwen-appliance
# zsh completion for qwen-appliance.
# Load it now:        source <(qwen-appliance completion zsh)
# Or for every shell: qwen-appliance completion zsh > "${fpath[1]}/_qwen-appliance"
_qwen_appliance() {
	local -a opts
	local cur=${words[CURRENT]}
	local -a req=("${(@)words[1,CURRENT-1]}")
	[[ $cur == -* ]] && req+=(-)
	opts=("${(@f)$("${(@)req}" --generate-bash-completion 2>/dev/null)}")
	if [[ -n ${opts[1]} ]]; then
		compadd -a opts
	else
		_files
	fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
	_qwen_appliance "$@"
else
	compdef _qwen_appliance qwen-appliance
fi
`

func init() {
	register(&cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes qwen-appliance's commands and flags. Bash and
zsh ask the program for candidates as you type, so the script stays right
after an upgrade; fish's is generated from this version's commands.

Examples:
   source <(qwen-appliance completion bash)
   qwen-appliance completion bash > /etc/bash_completion.d/qwen-appliance
   qwen-appliance completion zsh > "${fpath[1]}/_qwen-appliance"
   qwen-appliance completion fish > ~/.config/fish/completions/qwen-appliance.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("name one shell: bash, zsh or fish", "want one shell, got %d arguments", c.NArg())
			}
			var script string
			switch sh := c.Args().First(); sh {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				script = s
			default:
				return usagef("name one shell: bash, zsh or fish", "no completion for shell %q", sh)
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	})
}

// completeFlags answers a completion request for a command without
// subcommands: its flags when the word being completed starts with "-", and
// nothing otherwise, so that the shell completes file names (urfave/cli's
// default would offer the "help" subcommand). Like urfave/cli's, it reads the
// word from os.Args: the request is always a process of its own.
func completeFlags(c *cli.Command) cli.BashCompleteFunc {
	all := cli.DefaultCompleteWithFlags(c)
	return func(ctx *cli.Context) {
		if n := len(os.Args); n > 2 && strings.HasPrefix(os.Args[n-2], "-") {
			all(ctx)
		}
	}
}

// completionAfterDashes reports a completion request with a "--" among its
// words. urfave/cli does not complete those: it would run the command with
// "--generate-bash-completion" as an argument, so "uninstall -- <TAB>" would
// uninstall. Such a request gets no candidates instead.
func completionAfterDashes(args []string) bool {
	return len(args) > 1 && args[len(args)-1] == "--generate-bash-completion" && slices.Contains(args, "--")
}
