package proc

import (
	"errors"
	"fmt"
)

// Identity names one process for its whole life: its PID, its start time
// and the boot it started in. Record it when the process is started; check
// it (Check) before every signal. Start times count clock ticks (usually
// 10 ms), so a PID handed to a new process within the same tick as the old
// one exited could not be told apart; crashes, reboots and restarted PID
// namespaces are far slower than that.
type Identity struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start,omitempty"` // clock ticks after boot, /proc/PID/stat field 22
	Boot  string `json:"boot,omitempty"`  // BootID when it started
}

// Mismatch explains why a recorded identity is not (or no longer) the process
// holding its PID.
type Mismatch struct {
	ID     Identity
	Reason string
}

func (e *Mismatch) Error() string {
	return fmt.Sprintf("pid %d is not the process recorded (%s); not signalled", e.ID.PID, e.Reason)
}

// ErrGone is matched by the error of Check when the recorded process no
// longer runs at all.
var ErrGone = errors.New("process has exited")
