package remotehost

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/testharness/vshell"
)

// quote renders a file name as GNU coreutils' quote() does in the C locale:
// always in single quotes.
func quote(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "$" + strconv.Quote(s)
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteIfNeeded renders a file name as GNU's quotef(): bare when it is made
// of characters a shell leaves alone, else quoted.
func quoteIfNeeded(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%^=", r))
	}) {
		return s
	}
	return quote(s)
}

// options parses GNU-style arguments: short flags (combinable), long flags
// from longs (mapped to a short letter), options anywhere before "--", and
// "-" as an operand. A flag's value is 1 + the position of its last
// occurrence (0: absent), so "the last of -f, -e, -m wins" can be decided.
// It reports an error message as GNU does.
func options(p *vshell.Cmd, args []string, shorts string, longs map[string]byte) (map[byte]int, []string, bool) {
	flags := map[byte]int{}
	n := 0
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			return flags, operands, true
		case strings.HasPrefix(a, "--"):
			c, ok := longs[a[2:]]
			if !ok {
				p.Errorf("unrecognized option %s", quote(a))
				fmt.Fprintf(p.Stderr, "Try '%s --help' for more information.\n", p.Name)
				return nil, nil, false
			}
			n++
			flags[c] = n
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				if !strings.ContainsRune(shorts, rune(a[j])) {
					p.Errorf("invalid option -- '%c'", a[j])
					fmt.Fprintf(p.Stderr, "Try '%s --help' for more information.\n", p.Name)
					return nil, nil, false
				}
				n++
				flags[a[j]] = n
			}
		default:
			operands = append(operands, a)
		}
	}
	return flags, operands, true
}

func missingOperand(p *vshell.Cmd) int {
	p.Errorf("missing operand")
	fmt.Fprintf(p.Stderr, "Try '%s --help' for more information.\n", p.Name)
	return 1
}
