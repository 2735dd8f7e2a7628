package rules

import "strings"

// textOf is rule i's text as the shim prints it.
func textOf(s *Set, i int) string {
	lines := strings.Split(strings.TrimSpace(s.String()), "\n")
	line := lines[i]
	line = line[strings.Index(line, ": ")+2:]
	return line[:strings.LastIndex(line, " (")]
}
