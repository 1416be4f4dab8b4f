package netdev

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// nftTable is hv's own table; hv replaces it whole and touches nothing else.
const nftTable = "bridge hv"

// isolation drops what a private switch's ports send to the host.
type isolation struct {
	Switch string
	Ports  []string // host interface names; all are validIfName-clean
}

// nftScript is one atomic nft transaction that replaces table "bridge hv"
// with drops for the given switches, or removes the table when none has
// ports. "table; delete table" first makes the delete safe when it is absent.
func nftScript(rules []isolation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s\ndelete table %s\n", nftTable, nftTable)
	var body []string
	sort.Slice(rules, func(i, j int) bool { return rules[i].Switch < rules[j].Switch })
	for _, r := range rules {
		if len(r.Ports) == 0 {
			continue // nft refuses an empty anonymous set
		}
		ports := append([]string(nil), r.Ports...)
		sort.Strings(ports)
		quoted := make([]string, len(ports))
		for i, p := range ports {
			quoted[i] = `"` + p + `"`
		}
		body = append(body, fmt.Sprintf("\t\tiifname { %s } drop comment %q\n",
			strings.Join(quoted, ", "), "hv private switch "+r.Switch))
	}
	if len(body) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "table %s {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n", nftTable)
	for _, l := range body {
		b.WriteString(l)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// applyNFT feeds a script to nft. Without nft there is nothing to remove,
// so an empty rule set is then not an error.
func applyNFT(ctx context.Context, script string, needed bool) error {
	bin, err := exec.LookPath("nft")
	if err != nil {
		if !needed {
			return nil
		}
		return fmt.Errorf("%w: nft is not installed; private switches need it: apt-get install nftables", errdefs.ErrUnavailable)
	}
	cmd := exec.CommandContext(ctx, bin, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: nft -f -: %v: %s", errdefs.ErrUnavailable, err, strings.TrimSpace(out.String()))
	}
	return nil
}
