package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Component is one process whose memory and CPU the harness reports.
type Component struct {
	Name string
	PID  int

	mu      sync.Mutex
	peakRSS uint64 // largest VmRSS sampled, bytes
	hwm     uint64 // last VmHWM read (the kernel's own peak), bytes
	baseRSS uint64 // VmRSS when watching started
	gone    bool
}

// PeakRSS is the process's peak resident memory in bytes: the kernel's
// VmHWM (exact, since the process started) when it is at least the sampled
// peak, else the sampled peak.
func (c *Component) PeakRSS() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.hwm, c.peakRSS)
}

// SampledPeakRSS is the largest VmRSS seen while watching, and the VmRSS
// when watching began (for a process that was running long before, such as
// MariaDB, whose VmHWM is its peak since it started).
func (c *Component) SampledPeakRSS() (peak, atStart uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peakRSS, c.baseRSS
}

func (c *Component) sample() {
	st, err := readStatus(c.PID)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.gone = true
		return
	}
	if c.baseRSS == 0 {
		c.baseRSS = st.rss
	}
	c.peakRSS = max(c.peakRSS, st.rss)
	c.hwm = max(c.hwm, st.hwm)
}

// RSS is the process's resident memory now, in bytes (0 if it is gone).
func (c *Component) RSS() uint64 {
	st, _ := readStatus(c.PID)
	return st.rss
}

// CPU is the process's user+system CPU time so far.
func (c *Component) CPU() time.Duration {
	d, _ := readCPU(c.PID)
	return d
}

// Watch samples the components' resident memory every interval until ctx
// ends.
func Watch(ctx context.Context, every time.Duration, cs ...*Component) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, c := range cs {
			c.sample()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CPUSnapshot is the CPU time of each component at one instant.
type CPUSnapshot struct {
	At  time.Time
	CPU map[string]time.Duration
}

// SnapshotCPU reads every component's CPU time, and the machine's under
// the name Machine.
func SnapshotCPU(cs ...*Component) CPUSnapshot {
	s := CPUSnapshot{At: time.Now(), CPU: map[string]time.Duration{}}
	for _, c := range cs {
		s.CPU[c.Name] = c.CPU()
	}
	s.CPU[Machine], _ = machineCPU()
	return s
}

// Machine and Others name, in Cores, the whole machine's CPU and the part
// of it no watched component used: other processes disturbing the run.
const (
	Machine = "machine"
	Others  = "others"
)

// Cores is how many cores each component used on average between two
// snapshots, with the machine's total and what other processes used.
func Cores(from, to CPUSnapshot) map[string]float64 {
	wall := to.At.Sub(from.At).Seconds()
	out := map[string]float64{}
	if wall <= 0 {
		return out
	}
	ours := 0.0
	for name, t := range to.CPU {
		out[name] = (t - from.CPU[name]).Seconds() / wall
		if name != Machine {
			ours += out[name]
		}
	}
	out[Others] = max(0, out[Machine]-ours)
	return out
}

type status struct{ rss, hwm uint64 }

// readStatus reads VmRSS and VmHWM from /proc/<pid>/status.
func readStatus(pid int) (status, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return status{}, err
	}
	var st status
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &st.rss
		case "VmHWM":
			dst = &st.hwm
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseUint(f[0], 10, 64)
			*dst = n << 10
		}
	}
	return st, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// readCPU reads utime+stime from /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64) // field 14
	st, _ := strconv.ParseUint(f[12], 10, 64) // field 15
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// FindProcess returns the pid of a running process whose command name is
// one of names (e.g. "mariadbd", "mysqld"), or 0.
func FindProcess(names ...string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(comm)) == n {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	return 0
}

// machineCPU is the whole machine's busy CPU time so far, from /proc/stat
// (all states but idle and iowait).
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: malformed")
	}
	var busy uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}
