// cdi-reference: the gpu-cdi conformance harness's runner for the reference CDI Go library
// (tags.cncf.io/container-device-interface, Debian trixie's 0.8.0 build).
//
// Every verdict comes from the library; this program only turns command-line requests into
// library calls and prints the outcome as JSON on stdout, so that tests/conformance/judge.py
// can compare it with gpu-cdi's Python implementation. Library panics (0.8.0 panics on
// one-character vendor/class names) are recovered and reported as errors with "panic": true.
//
// Exit status: 0 when the request was carried out (whatever the verdict, which is in the JSON),
// 2 on a usage error of this program.
//
//	cdi-reference version
//	cdi-reference validate [--schema] FILE...
//	cdi-reference min-version FILE...
//	cdi-reference list DIR...                      (priority order: later dir wins)
//	cdi-reference inject [--spec-dir DIR]... [--oci FILE|-] [--annotation KEY=VALUE]... DEVICE...
//	cdi-reference edits [--spec-dir DIR]... DEVICE...
//	cdi-reference normalize [--oci FILE|-]
//	cdi-reference parse-name NAME...
//	cdi-reference parse-annotations KEY=VALUE...
//	cdi-reference annotation-key PLUGIN DEVICE-ID [DEVICE...]
//	cdi-reference yaml-types FILE...               (how go-yaml v2 types every scalar)
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	goyaml "sigs.k8s.io/yaml/goyaml.v2"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/schema"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// libraryVersion is the Debian version of the CDI library, set by build.sh via -ldflags.
var libraryVersion = "unknown"

const harnessVersion = "1"

func main() {
	if len(os.Args) < 2 {
		usageError("no command")
	}
	args := os.Args[2:]
	var out interface{}
	switch os.Args[1] {
	case "version":
		out = map[string]string{
			"harness": harnessVersion, "library": libraryVersion, "specVersion": cdi.CurrentVersion,
		}
	case "validate":
		out = validate(args)
	case "min-version":
		out = minVersion(positional(args))
	case "list":
		out = list(positional(args))
	case "inject":
		out = inject(args)
	case "edits":
		out = edits(args)
	case "normalize":
		out = normalize(args)
	case "parse-name":
		out = parseNames(positional(args))
	case "parse-annotations":
		out = parseAnnotations(positional(args))
	case "annotation-key":
		out = annotationKey(args)
	case "yaml-types":
		out = yamlTypes(positional(args))
	default:
		usageError("unknown command " + os.Args[1])
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "cdi-reference: cannot encode result: %v\n", err)
		os.Exit(1)
	}
}

func usageError(msg string) {
	fmt.Fprintf(os.Stderr, "cdi-reference: %s\nsee the comment at the top of main.go for the commands\n", msg)
	os.Exit(2)
}

// outcome is the common error part of every result.
type outcome struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Panic bool   `json:"panic,omitempty"`
}

func (o *outcome) set(err error) {
	o.OK = err == nil
	if err != nil {
		o.Error = err.Error()
		var p panicError
		o.Panic = errors.As(err, &p)
	}
}

type panicError struct{ value interface{} }

func (p panicError) Error() string { return fmt.Sprintf("panic in reference library: %v", p.value) }

// guard runs fn and turns a library panic into a panicError.
func guard(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError{p}
		}
	}()
	return fn()
}

// flags splits args into repeated --name VALUE / --name=VALUE options and positionals.
func flags(args []string, known map[string]bool, boolean map[string]bool) (map[string][]string, []string) {
	opts := map[string][]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		switch {
		case boolean[name]:
			opts[name] = append(opts[name], "true")
		case !known[name]:
			usageError("unknown flag " + a)
		case hasVal:
			opts[name] = append(opts[name], val)
		case i+1 < len(args):
			i++
			opts[name] = append(opts[name], args[i])
		default:
			usageError("flag " + a + " needs a value")
		}
	}
	return opts, pos
}

// positional returns the arguments of a command without flags ("--" ends flag parsing, so
// values starting with "--" can be passed).
func positional(args []string) []string {
	_, pos := flags(args, nil, nil)
	return pos
}

// ---------------------------------------------------------------- validate, min-version

type fileVerdict struct {
	File string `json:"file"`
	outcome
	SchemaError    string   `json:"schemaError,omitempty"`
	Kind           string   `json:"kind,omitempty"`
	Version        string   `json:"cdiVersion,omitempty"`
	MinimumVersion string   `json:"minimumVersion,omitempty"`
	Devices        []string `json:"devices,omitempty"`
	// Spec is the decoded spec as the library holds it (Go JSON tags, omitempty applied):
	// shows what YAML scalars became (e.g. an unquoted device name on -> "true").
	Spec *cdispec.Spec `json:"spec,omitempty"`
}

// validate loads each file with cdi.ReadSpec, the strict loader containerd and podman use
// (no external validator is configured there, so none is here). With --schema the raw file
// is also checked against the library's builtin JSON schema; that result is reported
// separately and does not change "ok".
func validate(args []string) []fileVerdict {
	opts, files := flags(args, nil, map[string]bool{"schema": true})
	results := []fileVerdict{}
	for _, file := range files {
		r := fileVerdict{File: file}
		var spec *cdi.Spec
		r.set(guard(func() (err error) {
			spec, err = cdi.ReadSpec(file, 0)
			return err
		}))
		if r.OK {
			r.Kind, r.Version, r.Spec = spec.Kind, spec.Version, spec.Spec
			if mv, err := cdi.MinimumRequiredVersion(spec.Spec); err == nil {
				r.MinimumVersion = mv
			}
			r.Devices = []string{}
			for _, d := range spec.Devices {
				r.Devices = append(r.Devices, parser.QualifiedName(spec.GetVendor(), spec.GetClass(), d.Name))
			}
		}
		if len(opts["schema"]) > 0 {
			if err := guard(func() error { return schemaCheck(file) }); err != nil {
				r.SchemaError = err.Error()
			}
		}
		results = append(results, r)
	}
	return results
}

// schemaCheck validates the raw document with the builtin schema. The library runs its extra
// annotation-key checks only on non-JSON input, so JSON is passed as a YAML stream.
func schemaCheck(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		data = append([]byte("---\n"), data...)
	}
	return schema.BuiltinSchema().ValidateData(data)
}

type minVersionResult struct {
	File string `json:"file"`
	outcome
	Version        string `json:"cdiVersion,omitempty"`
	MinimumVersion string `json:"minimumVersion,omitempty"`
}

// minVersion reports cdi.MinimumRequiredVersion of the strictly decoded file, before and
// independent of validation (so it works for specs whose declared version is too low).
func minVersion(files []string) []minVersionResult {
	results := []minVersionResult{}
	for _, file := range files {
		r := minVersionResult{File: file}
		r.set(guard(func() error {
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			raw, err := cdi.ParseSpec(data)
			if err != nil {
				return err
			}
			if raw == nil {
				return fmt.Errorf("no Spec data")
			}
			r.Version = raw.Version
			r.MinimumVersion, err = cdi.MinimumRequiredVersion(raw)
			return err
		}))
		results = append(results, r)
	}
	return results
}

// ---------------------------------------------------------------- list

type listedDevice struct {
	Name     string `json:"name"`
	Spec     string `json:"spec"`
	Priority int    `json:"priority"`
}

type listResult struct {
	outcome
	SpecDirs  []string            `json:"specDirs"`
	Devices   []listedDevice      `json:"devices"`
	Vendors   []string            `json:"vendors"`
	Classes   []string            `json:"classes"`
	Errors    map[string][]string `json:"errors"`
	DirErrors map[string]string   `json:"dirErrors"`
}

// newCache builds a cache like containerd's CRI plugin: explicit dirs, and one scan (done by
// NewCache) instead of fsnotify auto-refresh.
func newCache(dirs []string) (*cdi.Cache, error) {
	return cdi.NewCache(cdi.WithAutoRefresh(false), cdi.WithSpecDirs(dirs...))
}

func list(dirs []string) listResult {
	r := listResult{
		SpecDirs: []string{}, Devices: []listedDevice{}, Vendors: []string{}, Classes: []string{},
		Errors: map[string][]string{}, DirErrors: map[string]string{},
	}
	r.set(guard(func() error {
		c, err := newCache(dirs)
		if err != nil {
			return err
		}
		r.SpecDirs = append(r.SpecDirs, c.GetSpecDirectories()...)
		r.Vendors = append(r.Vendors, c.ListVendors()...)
		r.Classes = append(r.Classes, c.ListClasses()...)
		for _, name := range c.ListDevices() {
			d := listedDevice{Name: name}
			if dev := c.GetDevice(name); dev != nil && dev.GetSpec() != nil {
				d.Spec, d.Priority = dev.GetSpec().GetPath(), dev.GetSpec().GetPriority()
			}
			r.Devices = append(r.Devices, d)
		}
		for path, errs := range c.GetErrors() {
			for _, e := range errs {
				r.Errors[path] = append(r.Errors[path], e.Error())
			}
			sort.Strings(r.Errors[path])
		}
		for dir, e := range c.GetSpecDirErrors() {
			r.DirErrors[dir] = e.Error()
		}
		return nil
	}))
	return r
}

// ---------------------------------------------------------------- inject, edits

type injectResult struct {
	outcome
	Devices     []string            `json:"devices"`
	Unresolved  []string            `json:"unresolved,omitempty"`
	CacheErrors map[string][]string `json:"cacheErrors,omitempty"`
	Spec        *oci.Spec           `json:"spec,omitempty"`
}

func readOCI(path string) (*oci.Spec, error) {
	spec := &oci.Spec{}
	if path == "" {
		return spec, nil
	}
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, spec); err != nil {
		return nil, fmt.Errorf("cannot decode OCI spec %s: %w", path, err)
	}
	return spec, nil
}

// requested returns the positional devices verbatim (duplicates kept: that is what
// InjectDevices receives from a direct caller), then the devices named by cdi.k8s.io/
// annotations that are not requested yet, as containerd's CRI WithCDI adds them. Annotation
// keys are taken in sorted order (the library iterates a Go map, i.e. in random order).
func requested(positional, annotations []string) ([]string, error) {
	devices := append([]string{}, positional...)
	seen := map[string]bool{}
	for _, d := range positional {
		seen[d] = true
	}
	ann := map[string]string{}
	for _, kv := range annotations {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			usageError("annotation " + kv + " is not KEY=VALUE")
		}
		ann[k] = v
	}
	if err := guard(func() error { _, _, err := cdi.ParseAnnotations(ann); return err }); err != nil {
		return nil, fmt.Errorf("failed to parse CDI device annotations: %w", err)
	}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, devs, _ := cdi.ParseAnnotations(map[string]string{k: ann[k]})
		for _, d := range devs {
			if !seen[d] {
				seen[d] = true
				devices = append(devices, d)
			}
		}
	}
	return devices, nil
}

func cacheErrors(c *cdi.Cache) map[string][]string {
	out := map[string][]string{}
	for path, errs := range c.GetErrors() {
		for _, e := range errs {
			out[path] = append(out[path], e.Error())
		}
		sort.Strings(out[path])
	}
	return out
}

// inject runs Cache.InjectDevices on the OCI spec. On failure the (possibly partly edited)
// spec is not reported: callers must treat the container creation as failed.
func inject(args []string) injectResult {
	opts, pos := flags(args, map[string]bool{"spec-dir": true, "oci": true, "annotation": true}, nil)
	r := injectResult{Devices: []string{}}
	r.set(guard(func() error {
		devices, err := requested(pos, opts["annotation"])
		if err != nil {
			return err
		}
		r.Devices = devices
		spec, err := readOCI(last(opts["oci"]))
		if err != nil {
			return err
		}
		c, err := newCache(opts["spec-dir"])
		if err != nil {
			return err
		}
		r.CacheErrors = cacheErrors(c)
		unresolved, err := c.InjectDevices(spec, devices...)
		if err != nil {
			r.Unresolved = unresolved
			return err
		}
		r.Spec = spec
		return nil
	}))
	return r
}

type editsResult struct {
	outcome
	Devices []string                `json:"devices"`
	Specs   []string                `json:"specs"`
	Edits   *cdispec.ContainerEdits `json:"containerEdits,omitempty"`
}

// edits returns the container edits InjectDevices would merge for the request: for each
// device in order, its spec's top-level edits (the first time that spec is met), then the
// device's own edits. The library keeps that merge private, so it is repeated here with the
// library's own ContainerEdits.Append.
func edits(args []string) editsResult {
	opts, pos := flags(args, map[string]bool{"spec-dir": true, "annotation": true}, nil)
	r := editsResult{Devices: []string{}, Specs: []string{}}
	r.set(guard(func() error {
		devices, err := requested(pos, opts["annotation"])
		if err != nil {
			return err
		}
		r.Devices = devices
		c, err := newCache(opts["spec-dir"])
		if err != nil {
			return err
		}
		merged := &cdi.ContainerEdits{ContainerEdits: &cdispec.ContainerEdits{}}
		seen := map[*cdi.Spec]bool{}
		var unresolved []string
		for _, name := range devices {
			d := c.GetDevice(name)
			if d == nil {
				unresolved = append(unresolved, name)
				continue
			}
			if s := d.GetSpec(); !seen[s] {
				seen[s] = true
				r.Specs = append(r.Specs, s.GetPath())
				merged.Append(&cdi.ContainerEdits{ContainerEdits: &s.ContainerEdits})
			}
			merged.Append(&cdi.ContainerEdits{ContainerEdits: &d.ContainerEdits})
		}
		if unresolved != nil {
			return fmt.Errorf("unresolvable CDI devices %s", strings.Join(unresolved, ", "))
		}
		r.Edits = merged.ContainerEdits
		return nil
	}))
	return r
}

// normalize round-trips an OCI spec through the runtime-spec Go types: unknown fields and
// empty values disappear exactly as they do in inject's output.
func normalize(args []string) interface{} {
	opts, _ := flags(args, map[string]bool{"oci": true}, nil)
	spec, err := readOCI(last(opts["oci"]))
	if err != nil {
		r := outcome{}
		r.set(err)
		return r
	}
	return spec
}

func last(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[len(vals)-1]
}

// ---------------------------------------------------------------- names and annotations

type nameResult struct {
	Name string `json:"name"`
	outcome
	Vendor string `json:"vendor"`
	Class  string `json:"class"`
	Device string `json:"device"`
}

func parseNames(names []string) []nameResult {
	results := []nameResult{}
	for _, name := range names {
		r := nameResult{Name: name}
		r.set(guard(func() (err error) {
			r.Vendor, r.Class, r.Device, err = parser.ParseQualifiedName(name)
			return err
		}))
		results = append(results, r)
	}
	return results
}

type annotationsResult struct {
	outcome
	Keys    []string            `json:"keys"`
	Devices map[string][]string `json:"devices"`
}

// parseAnnotations runs cdi.ParseAnnotations on the whole map (one bad value fails it all),
// and reports the CDI keys and, per key, its devices in order.
func parseAnnotations(kvs []string) annotationsResult {
	ann := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			usageError("annotation " + kv + " is not KEY=VALUE")
		}
		ann[k] = v
	}
	r := annotationsResult{Keys: []string{}, Devices: map[string][]string{}}
	r.set(guard(func() error {
		keys, _, err := cdi.ParseAnnotations(ann)
		if err != nil {
			return err
		}
		sort.Strings(keys)
		r.Keys = append(r.Keys, keys...)
		for _, k := range keys {
			_, devs, _ := cdi.ParseAnnotations(map[string]string{k: ann[k]})
			r.Devices[k] = devs
		}
		return nil
	}))
	return r
}

type annotationKeyResult struct {
	outcome
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

func annotationKey(args []string) annotationKeyResult {
	if len(args) < 2 {
		usageError("annotation-key PLUGIN DEVICE-ID [DEVICE...]")
	}
	r := annotationKeyResult{}
	r.set(guard(func() error {
		ann, err := cdi.UpdateAnnotations(nil, args[0], args[1], args[2:])
		if err != nil {
			return err
		}
		for k, v := range ann {
			r.Key, r.Value = k, v
		}
		return nil
	}))
	return r
}

// ---------------------------------------------------------------- YAML typing

type yamlTypesResult struct {
	File string `json:"file"`
	outcome
	Document interface{} `json:"document,omitempty"`
}

// yamlTypes decodes each file's first document with go-yaml v2 (the fork inside
// sigs.k8s.io/yaml that the CDI loader uses) into interface{} and reports every scalar as
// {"type": Go type, "value": its text}: how YAML 1.1 typed it before the loader converted it.
func yamlTypes(files []string) []yamlTypesResult {
	results := []yamlTypesResult{}
	for _, file := range files {
		r := yamlTypesResult{File: file}
		r.set(guard(func() error {
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			var doc interface{}
			if err := goyaml.Unmarshal(data, &doc); err != nil {
				return err
			}
			r.Document = typed(doc)
			return nil
		}))
		results = append(results, r)
	}
	return results
}

func typed(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		out := map[string]interface{}{}
		for k, item := range t {
			out[fmt.Sprint(k)] = typed(item)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, item := range t {
			out[i] = typed(item)
		}
		return out
	default:
		return map[string]string{"type": fmt.Sprintf("%T", v), "value": fmt.Sprint(v)}
	}
}
