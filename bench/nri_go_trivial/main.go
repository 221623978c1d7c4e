// A trivial NRI plugin on containerd's Go stub (NRI 0.6.1): the anchor of bench/nri.py.
// CreateContainer answers an empty adjustment, or (-answer FILE) always the same one, read at
// start (fields newer than NRI 0.6.1, such as CDI_devices, are kept and sent as they are);
// prints "configured" and "synchronized" like tests/nri/sample_plugin.py. Built from Debian
// trixie's Go packages, offline, by
//
//	bash bench/nri_go_trivial/build.sh   # prints the binary's path
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"google.golang.org/protobuf/proto"
)

type plugin struct{ answer *api.ContainerAdjustment }

func (p *plugin) Configure(_ context.Context, config, runtime, version string) (stub.EventMask, error) {
	fmt.Println("configured")
	return 0, nil
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	fmt.Println("synchronized")
	return nil, nil
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	if p.answer != nil {
		return p.answer, nil, nil
	}
	return &api.ContainerAdjustment{}, nil, nil
}

func main() {
	socket := flag.String("socket", "/var/run/nri/nri.sock", "")
	name := flag.String("name", "gotrivial", "")
	idx := flag.String("idx", "50", "")
	answer := flag.String("answer", "", "file holding a serialized ContainerAdjustment to answer with")
	flag.Parse()
	p := &plugin{}
	if *answer != "" {
		wire, err := os.ReadFile(*answer)
		if err == nil {
			p.answer = &api.ContainerAdjustment{}
			err = proto.Unmarshal(wire, p.answer)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "nri_go_trivial: -answer %s: %v\n", *answer, err)
			os.Exit(1)
		}
	}
	s, err := stub.New(p, stub.WithSocketPath(*socket), stub.WithPluginName(*name), stub.WithPluginIdx(*idx))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
