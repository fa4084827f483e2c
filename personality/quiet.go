package personality

import (
	"flag"
	"io"
	"sync"

	"k8s.io/klog/v2"
)

var quietOnce sync.Once

// quietTrillian silences klog, which Trillian logs through: the personality
// reports what matters itself, in structured logs.
func quietTrillian() {
	quietOnce.Do(func() {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		_ = fs.Set("logtostderr", "false")
		_ = fs.Set("alsologtostderr", "false")
		_ = fs.Set("stderrthreshold", "FATAL")
		klog.SetOutput(io.Discard)
	})
}
