package bundles

import "github.com/qwen-appliance/qwen-appliance/bundles/demomodel"

// The demo model is generated, deterministically and with no network, for
// generated://demo.
func init() {
	RegisterGenerator("demo", Generator{Write: demomodel.Write, Meta: demomodel.Meta})
}
