package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// superviseEnv switches the test binary into a stand-in for 'run': it starts
// the server the JSON file names (a supervisedConfig), prints "ready PID"
// and serves until killed.
const superviseEnv = "QWA_TEST_SUPERVISE"

type supervisedConfig struct {
	Config  Config
	Guarded bool
}

func supervise(file string) int {
	data, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var sc supervisedConfig
	if err := json.Unmarshal(data, &sc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	o := Options{Config: sc.Config, ReadyTimeout: 90 * time.Second, StopTimeout: 5 * time.Second, Progress: os.Stderr}
	if sc.Guarded {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o.Guard = []string{self, GuardArg}
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", s.PID())
	return map[bool]int{true: 0, false: 1}[s.Wait() == nil]
}
