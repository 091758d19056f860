package sdtimer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	o := Options{Writer: "test", Description: "qwen-appliance verify", Args: []string{"/usr/bin/true", "verify", "--metrics-textfile", "/var/lib/x.prom"},
		OnCalendar: "*:0/15", Delay: "1min", After: "qwen-appliance-gateway.service"}
	svc, timer, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/true verify --metrics-textfile /var/lib/x.prom\n", "After=qwen-appliance-gateway.service\n", "NoNewPrivileges=yes\n"} {
		if !strings.Contains(svc, want) {
			t.Errorf("service lacks %q:\n%s", want, svc)
		}
	}
	if strings.Contains(svc, "Nice=") {
		t.Errorf("not a background job, but niced:\n%s", svc)
	}
	if !strings.Contains(timer, "OnCalendar=*:0/15\n") || !strings.Contains(timer, "RandomizedDelaySec=1min\n") {
		t.Errorf("timer:\n%s", timer)
	}
	for name, bad := range map[string]Options{
		"relative program": {Args: []string{"qwen-appliance"}, OnCalendar: "daily"},
		"space in an arg":  {Args: []string{"/bin/x", "/srv/my dir"}, OnCalendar: "daily"},
		"expansion":        {Args: []string{"/bin/x", "$HOME"}, OnCalendar: "daily"},
		"no calendar":      {Args: []string{"/bin/x"}},
		"newline calendar": {Args: []string{"/bin/x"}, OnCalendar: "daily\nExecStart=/bin/sh"},
	} {
		if _, _, err := Render(bad); err == nil {
			t.Errorf("%s: accepted %+v", name, bad)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.service"), []byte(svc), 0o644)
	os.WriteFile(filepath.Join(dir, "x.timer"), []byte(timer), 0o644)
	if out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "x.service"), filepath.Join(dir, "x.timer")).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
