package harden

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Session is the remote login an apply runs over (from SSH_CONNECTION): the
// client's address and port, and the server port it connected to.
type Session struct {
	Client     netip.Addr `json:"client"`
	ClientPort uint16     `json:"clientPort"`
	ServerPort uint16     `json:"serverPort"`
	// Server is the address the client connected to; invalid when only
	// the older SSH_CLIENT told the session.
	Server netip.Addr `json:"server"`
}

// ThroughHere reports whether the session's traffic passes through the
// firewall of the current network namespace: its server address is one of
// this namespace's interface addresses (or unknown, and then it is assumed
// to). An install into a sandbox namespace cannot cut off a session that
// arrives elsewhere.
func (s *Session) ThroughHere() bool {
	if !s.Server.IsValid() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == s.Server {
				return true
			}
		}
	}
	return false
}

// ParseSession reads the SSH_CONNECTION value "CLIENT_IP CLIENT_PORT
// SERVER_IP SERVER_PORT"; an empty value means no remote session (nil).
func ParseSession(sshConnection string) (*Session, error) {
	f := strings.Fields(sshConnection)
	if len(f) == 0 {
		return nil, nil
	}
	if len(f) != 4 {
		return nil, fmt.Errorf("SSH_CONNECTION %q: want 4 fields, got %d", sshConnection, len(f))
	}
	ip, err := netip.ParseAddr(f[0])
	if err != nil {
		return nil, fmt.Errorf("SSH_CONNECTION %q: client %q is not an IP address", sshConnection, f[0])
	}
	cport, err := parsePort(f[1])
	if err != nil {
		return nil, fmt.Errorf("SSH_CONNECTION %q: client %v", sshConnection, err)
	}
	sport, err := parsePort(f[3])
	if err != nil {
		return nil, fmt.Errorf("SSH_CONNECTION %q: server %v", sshConnection, err)
	}
	var server netip.Addr // "-" from SSH_CLIENT: unknown
	if f[2] != "-" {
		if server, err = netip.ParseAddr(f[2]); err != nil {
			return nil, fmt.Errorf("SSH_CONNECTION %q: server %q is not an IP address", sshConnection, f[2])
		}
		server = server.WithZone("").Unmap()
	}
	return &Session{Client: ip.WithZone("").Unmap(), ClientPort: cport, ServerPort: sport, Server: server}, nil
}

// FindSession finds the SSH login this process runs under, for
// anti-lockout. getenv is the process's own environment: SSH_CONNECTION, or
// the older SSH_CLIENT ("IP CLIENT_PORT SERVER_PORT"). When neither is set
// at all it walks the parent processes' environments in /proc, because
// `sudo` drops SSH_CONNECTION by default; setting SSH_CONNECTION to ""
// declares "no remote session" and stops the walk.
func FindSession(lookupEnv func(string) (string, bool)) (*Session, error) {
	if v, ok := lookupEnv("SSH_CONNECTION"); ok {
		return ParseSession(v)
	}
	if v, ok := lookupEnv("SSH_CLIENT"); ok {
		return parseSSHClient(v)
	}
	pid := os.Getppid()
	for depth := 0; pid > 1 && depth < 64; depth++ {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			break
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("SSH_CONNECTION=")); ok {
				return ParseSession(string(v))
			}
		}
		if pid, err = parentPID(pid); err != nil {
			break
		}
	}
	return nil, nil
}

func parseSSHClient(v string) (*Session, error) {
	f := strings.Fields(v)
	if len(f) == 0 {
		return nil, nil
	}
	if len(f) != 3 {
		return nil, fmt.Errorf("SSH_CLIENT %q: want 3 fields, got %d", v, len(f))
	}
	return ParseSession(strings.Join([]string{f[0], f[1], "-", f[2]}, " "))
}

// parentPID reads the parent of pid from /proc/PID/stat, whose second
// field (the command name, in parentheses) may itself hold spaces and ")".
func parentPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: too short", pid)
	}
	return strconv.Atoi(f[1])
}
