package harden

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// account is one line of /etc/passwd or /etc/group that matters here.
type account struct {
	Name    string
	ID      int    // uid, or gid for groups
	GID     int    // passwd only
	Comment string // GECOS
	Home    string
	Shell   string
}

// parseAccounts reads passwd (7 fields) or group (4 fields) text, skipping
// comments and blank lines. Errors name the line.
func parseAccounts(data []byte, fields int) ([]account, error) {
	var out []account
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-") {
			continue // NIS compat entries name no local account
		}
		f := strings.Split(line, ":")
		if len(f) != fields {
			return nil, fmt.Errorf("line %d: %d fields, want %d", n, len(f), fields)
		}
		if f[0] == "" {
			return nil, fmt.Errorf("line %d: empty name", n)
		}
		id, err := strconv.ParseUint(f[2], 10, 31)
		if err != nil {
			return nil, fmt.Errorf("line %d: id %q is not a number", n, f[2])
		}
		a := account{Name: f[0], ID: int(id)}
		if fields == 7 {
			gid, err := strconv.ParseUint(f[3], 10, 31)
			if err != nil {
				return nil, fmt.Errorf("line %d: gid %q is not a number", n, f[3])
			}
			a.GID, a.Comment, a.Home, a.Shell = int(gid), f[4], f[5], f[6]
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func findAccount(as []account, name string) (account, bool) {
	for _, a := range as {
		if a.Name == name {
			return a, true
		}
	}
	return account{}, false
}
