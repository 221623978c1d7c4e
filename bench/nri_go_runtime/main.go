// The runtime side of NRI as containerd 1.7.24 runs it: NRI 0.6.1's adaptation package (the
// code containerd calls for every NRI event), listening for one external plugin. The load
// generator of bench/nri.py. Built from Debian trixie's Go packages, offline, by
//
//	bash bench/nri_go_trivial/build.sh nri_go_runtime   # prints the binary's path
//
// Usage: nri_go_runtime -socket PATH -request FILE (a serialized CreateContainerRequest).
// Prints "connected" once a plugin has registered, configured and synchronized, then reads
// commands on stdin, one per line, and answers each with one line:
//
//	run N G   N CreateContainer calls from G goroutines at once (the "pods"), as containerd
//	          makes them: Adaptation.CreateContainer, which holds the adaptation's lock for the
//	          whole call, so the plugin sees one request at a time whatever G is. Answers
//	          "ok WALL_NS LAT_NS..." (each call's latency, lock wait included) or "error MSG".
//	shape     "shape ENV MOUNTS DEVICES HOOKS" of the merged adjustment for the request.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	nri "github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"google.golang.org/protobuf/proto"
)

// quietLog drops NRI's log lines, except that it reports a plugin's connection, which the
// adaptation logs once the plugin is in its list.
type quietLog struct{ connected chan<- string }

func (l quietLog) Debugf(context.Context, string, ...interface{}) {}
func (l quietLog) Infof(_ context.Context, format string, args ...interface{}) {
	if format == "plugin %q connected" {
		l.connected <- fmt.Sprint(args...)
	}
}
func (l quietLog) Warnf(_ context.Context, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "nri warning: "+format+"\n", args...)
}
func (l quietLog) Errorf(_ context.Context, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "nri error: "+format+"\n", args...)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "nri_go_runtime: "+format+"\n", args...)
	os.Exit(1)
}

// requests decodes n copies of the request: the adaptation fills in a request's empty fields
// in place, and containerd builds a new one for every container.
func requests(wire []byte, n int) ([]*api.CreateContainerRequest, error) {
	out := make([]*api.CreateContainerRequest, n)
	for i := range out {
		out[i] = &api.CreateContainerRequest{}
		if err := proto.Unmarshal(wire, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func run(r *nri.Adaptation, wire []byte, n, g int) string {
	reqs, err := requests(wire, n)
	if err != nil {
		return "error decoding the request: " + err.Error()
	}
	lat := make([]int64, n)
	errs := make([]error, g)
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for w := 0; w < g; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += g {
				t0 := time.Now()
				_, err := r.CreateContainer(ctx, reqs[i])
				lat[i] = int64(time.Since(t0))
				if err != nil {
					errs[w] = err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	wall := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return "error " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
	}
	var b strings.Builder
	b.WriteString("ok ")
	b.WriteString(strconv.FormatInt(int64(wall), 10))
	for _, v := range lat {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(v, 10))
	}
	return b.String()
}

func shape(r *nri.Adaptation, wire []byte) string {
	reqs, err := requests(wire, 1)
	if err != nil {
		return "error decoding the request: " + err.Error()
	}
	rsp, err := r.CreateContainer(context.Background(), reqs[0])
	if err != nil {
		return "error " + err.Error()
	}
	a := rsp.GetAdjust()
	hooks := 0
	if h := a.GetHooks(); h != nil {
		hooks = len(h.Prestart) + len(h.CreateRuntime) + len(h.CreateContainer) +
			len(h.StartContainer) + len(h.Poststart) + len(h.Poststop)
	}
	return fmt.Sprintf("shape %d %d %d %d", len(a.GetEnv()), len(a.GetMounts()),
		len(a.GetLinux().GetDevices()), hooks)
}

func main() {
	socket := flag.String("socket", "", "NRI socket to listen on")
	request := flag.String("request", "", "file holding a serialized CreateContainerRequest")
	flag.Parse()
	wire, err := os.ReadFile(*request)
	if err != nil {
		fail("%v", err)
	}
	empty, err := os.MkdirTemp("", "nri_go_runtime")
	if err != nil {
		fail("%v", err)
	}
	defer os.RemoveAll(empty)
	connected := make(chan string, 1)
	nrilog.Set(quietLog{connected})
	syncFn := func(ctx context.Context, cb nri.SyncCB) error {
		_, err := cb(ctx, nil, nil)
		return err
	}
	update := func(context.Context, []*nri.ContainerUpdate) ([]*nri.ContainerUpdate, error) {
		return nil, nil
	}
	r, err := nri.New("containerd", "1.7.24", syncFn, update, nri.WithSocketPath(*socket),
		nri.WithPluginPath(empty), nri.WithPluginConfigPath(empty))
	if err != nil {
		fail("%v", err)
	}
	if err := r.Start(); err != nil {
		fail("%v", err)
	}
	defer r.Stop()
	select {
	case <-connected:
	case <-time.After(60 * time.Second):
		fail("no plugin connected within 60 s")
	}
	fmt.Println("connected")
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	for in.Scan() {
		f := strings.Fields(in.Text())
		var answer string
		switch {
		case len(f) == 3 && f[0] == "run":
			n, err1 := strconv.Atoi(f[1])
			g, err2 := strconv.Atoi(f[2])
			if err1 != nil || err2 != nil || n < 1 || g < 1 {
				answer = "error bad command: " + in.Text()
			} else {
				answer = run(r, wire, n, g)
			}
		case len(f) == 1 && f[0] == "shape":
			answer = shape(r, wire)
		default:
			answer = "error unknown command: " + in.Text()
		}
		out.WriteString(answer + "\n")
		out.Flush()
	}
}
