package interop

import (
	"context"
	"fmt"
)

// NewNetwork returns the path kind asks for: "link" (the packet-level
// link between two network namespaces), "proxy" (loopback proxies), or
// "auto" (the link where it can be made, else the proxies).
func NewNetwork(ctx context.Context, kind string) (Network, error) {
	switch kind {
	case "proxy":
		return NewProxyNetwork(), nil
	case "link", "auto":
		n, err := NewLinkNetwork(ctx)
		switch {
		case err == nil:
			return n, nil
		case kind == "link":
			return nil, err
		}
		return NewProxyNetwork(), nil
	}
	return nil, fmt.Errorf("unknown path %q (want link, proxy or auto)", kind)
}
