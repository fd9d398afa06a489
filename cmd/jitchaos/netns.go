package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// A cluster round's own network, for the minority partition: every node
// runs in a network namespace of its own (jcn1…), joined to the host by a
// veth pair on one bridge (jcbr0, 10.213.0.1/24; node i is 10.213.0.1i).
// Cutting node i adds blackhole routes between it and every other node, in
// both directions, while the host (jitchaos's agents, checker and
// observer) still reaches every node: the nodes see a minority partition,
// the clients of the cut node a server that answers but hears nothing of
// the others. Nothing leaves the namespaces and the bridge the round made;
// close removes them (and start removes what a killed earlier run left).
const (
	labBridge = "jcbr0"
	labNS     = "jcn"
	labNet    = "10.213.0"
)

// netLab is the network of a round of n nodes.
type netLab struct{ n int }

// labUnavailable says why this machine cannot make the round's network
// (nil if it can): it takes root and iproute2's ip.
func labUnavailable() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("network namespaces need ip (iproute2)")
	}
	return nil
}

// newNetLab makes the bridge and n namespaces, each with its address.
func newNetLab(n int) (*netLab, error) {
	l := &netLab{n: n}
	l.close()
	steps := [][]string{
		{"link", "add", labBridge, "type", "bridge"},
		{"addr", "add", labNet + ".1/24", "dev", labBridge},
		{"link", "set", labBridge, "up"},
	}
	for i := 1; i <= n; i++ {
		ns, veth := l.ns(i), fmt.Sprintf("jcv%d", i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"link", "set", veth, "master", labBridge},
			[]string{"link", "set", veth, "up"},
			[]string{"-n", ns, "addr", "add", l.ip(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// ns is node i's namespace (1-based); ip its address.
func (l *netLab) ns(i int) string { return fmt.Sprintf("%s%d", labNS, i) }
func (l *netLab) ip(i int) string { return fmt.Sprintf("%s.%d", labNet, 10+i) }

// hosts and wraps are what jitdproc.NewClusterOn takes.
func (l *netLab) hosts() []string {
	var out []string
	for i := 1; i <= l.n; i++ {
		out = append(out, l.ip(i))
	}
	return out
}

func (l *netLab) wraps() [][]string {
	var out [][]string
	for i := 1; i <= l.n; i++ {
		out = append(out, []string{"ip", "netns", "exec", l.ns(i)})
	}
	return out
}

// cut cuts node i (1-based) off from the other nodes, or joins it again.
func (l *netLab) cut(i int, off bool) error {
	verb := "add"
	if !off {
		verb = "del"
	}
	var errs []error
	for j := 1; j <= l.n; j++ {
		if j == i {
			continue
		}
		errs = append(errs,
			ip("-n", l.ns(i), "route", verb, "blackhole", l.ip(j)+"/32"),
			ip("-n", l.ns(j), "route", verb, "blackhole", l.ip(i)+"/32"))
	}
	return errors.Join(errs...)
}

// close removes the namespaces (their veth ends go with them) and the
// bridge; what is not there is no error.
func (l *netLab) close() {
	for i := 1; i <= l.n; i++ {
		_ = ip("netns", "del", l.ns(i))
	}
	_ = ip("link", "del", labBridge)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
