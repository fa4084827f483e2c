// Package flagfile lets every carelog binary take its flags from a JSON
// config file too: {"listen": ":8080", "mysql": "..."}. Keys are flag names;
// flags given on the command line win over the file.
package flagfile

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Apply reads path and sets every flag of fs that the command line did not
// set. Unknown keys are errors, so a typo never silently falls back to a
// default.
func Apply(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("config file %s: invalid JSON: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for k, v := range m {
		if fs.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (settings are the flag names; see -help)", path, k)
		}
		if set[k] {
			continue
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(v)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("config file %s: setting %q: %w", path, k, err)
		}
	}
	return nil
}
