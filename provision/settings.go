package provision

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// Defaults for the settings an operator leaves unset on a first install.
const (
	DefaultListen        = "127.0.0.1:8443"
	DefaultMetricsListen = "127.0.0.1:9464"
	DefaultHost          = "localhost"
)

// resolveSettings fills what the operator left unset in o (an empty string, a
// nil slice) with what the previous installation recorded, else with the
// defaults, and returns the lines that say what changed from the previous
// installation's settings ("listen: 127.0.0.1:8443 -> 0.0.0.0:8443"). An
// installation made before settings were recorded is read from its gateway
// addresses and the firewall record harden keeps.
func resolveSettings(o *Options, prev *state.State, root harden.Root) (diff []settingChange, err error) {
	old, err := recordedSettings(prev, root)
	if err != nil {
		return nil, err
	}
	var oldProbes []string
	if prev != nil {
		oldProbes = prev.Firewall.ProbeTargets
	}
	str := func(name string, dst *string, was, def string) {
		if *dst == "" {
			*dst = was
		}
		if *dst == "" {
			*dst = def
		}
		if prev != nil && was != "" && was != *dst {
			diff = append(diff, settingChange{name, was, *dst})
		}
	}
	str("listen", &o.Listen, old.Listen, DefaultListen)
	str("metrics-listen", &o.MetricsListen, old.MetricsListen, DefaultMetricsListen)
	str("host", &o.Host, old.Host, DefaultHost)

	prefixes := func(name string, dst *[]netip.Prefix, was []string) error {
		if *dst == nil {
			for _, s := range was {
				p, err := harden.ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("recorded %s %q: %w", name, s, err)
				}
				*dst = append(*dst, p)
			}
		}
		diff = appendListDiff(diff, prev, name, was, strs(*dst))
		return nil
	}
	if err := prefixes("allow-cidr", &o.ClientCIDRs, old.ClientCIDRs); err != nil {
		return nil, err
	}
	if err := prefixes("admin-cidr", &o.AdminCIDRs, old.AdminCIDRs); err != nil {
		return nil, err
	}
	if o.Egress == nil {
		for _, s := range old.Egress {
			r, err := harden.ParseEgress(s)
			if err != nil {
				return nil, fmt.Errorf("recorded allow-egress: %w", err)
			}
			o.Egress = append(o.Egress, r)
		}
	}
	diff = appendListDiff(diff, prev, "allow-egress", old.Egress, strs(o.Egress))
	if o.ProbeTargets == nil {
		o.ProbeTargets = slices.Clone(oldProbes)
	}
	diff = appendListDiff(diff, prev, "probe", oldProbes, o.ProbeTargets)
	return diff, nil
}

// recordedSettings is what prev was installed with; zero when prev is nil.
func recordedSettings(prev *state.State, root harden.Root) (state.Settings, error) {
	switch {
	case prev == nil:
		return state.Settings{}, nil
	case prev.Settings != nil:
		return *prev.Settings, nil
	}
	var s state.Settings
	if l := prev.Gateway.Listen; len(l) == 2 {
		s.Listen, s.MetricsListen = l[0], l[1]
	}
	rec, err := harden.LoadRecord(root)
	if errors.Is(err, harden.ErrNotApplied) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read the firewall the installation was made with: %w", err)
	}
	s.ClientCIDRs, s.AdminCIDRs, s.Egress = strs(rec.Policy.ClientCIDRs), strs(rec.Policy.AdminCIDRs), strs(rec.Policy.Egress)
	return s, nil
}

// settingsOf is what install records for the resolved options.
func settingsOf(o Options) *state.Settings {
	return &state.Settings{Listen: o.Listen, MetricsListen: o.MetricsListen, Host: o.Host,
		ClientCIDRs: strs(o.ClientCIDRs), AdminCIDRs: strs(o.AdminCIDRs), Egress: strs(o.Egress)}
}

// settingChange is one setting that differs from the previous installation's,
// named by its install flag.
type settingChange struct{ Name, Was, Now string }

func (c settingChange) String() string { return fmt.Sprintf("%s: %s -> %s", c.Name, c.Was, c.Now) }

func appendListDiff(diff []settingChange, prev *state.State, name string, was, now []string) []settingChange {
	if prev == nil || slices.Equal(was, now) {
		return diff
	}
	show := func(l []string) string {
		if len(l) == 0 {
			return "(none)"
		}
		return strings.Join(l, ",")
	}
	return append(diff, settingChange{name, show(was), show(now)})
}

func strs[T fmt.Stringer](l []T) []string {
	if len(l) == 0 {
		return nil
	}
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = v.String()
	}
	return out
}

// gatewaySettingsChanged reports whether a setting the running gateway was
// started with differs from the resolved ones: its addresses and host name
// and, under systemd, the networks its unit lets in.
func (in *installer) gatewaySettingsChanged() bool {
	for _, d := range in.settings {
		switch d.Name {
		case "listen", "metrics-listen", "host":
			return true
		case "allow-cidr", "admin-cidr":
			if in.sup.sandboxed() {
				return true
			}
		}
	}
	return false
}

// gatewayKBChanged reports whether the running gateway serves another
// knowledge base than install's (one installed before install made one
// was started without serve --kb).
func (in *installer) gatewayKBChanged() bool {
	return in.prev != nil && in.prev.Gateway.KB != in.kbServed()
}

// kbServed is the knowledge base the gateway is to serve: the store's, when
// install makes one; otherwise (rollback, callers without a KnowledgeBase)
// the one the installation's gateway already serves, which is kept.
func (in *installer) kbServed() string {
	switch {
	case in.o.KB != nil:
		return KBPath(in.o.Store)
	case in.prev != nil:
		return in.prev.Gateway.KB
	}
	return ""
}
