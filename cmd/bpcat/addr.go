package main

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// family is the address family a command was restricted to with -4 or -6.
type family int

const (
	anyFamily family = iota
	ipv4Only
	ipv6Only
)

// network returns the resolver's network name for f.
func (f family) network() string {
	switch f {
	case ipv4Only:
		return "ip4"
	case ipv6Only:
		return "ip6"
	}
	return "ip"
}

// familyFlags are -4 and -6.
type familyFlags struct{ v4, v6 bool }

func (f *familyFlags) register(fs *flagSet) {
	fs.BoolVar(&f.v4, "4", false, "use IPv4 only")
	fs.BoolVar(&f.v6, "6", false, "use IPv6 only")
}

func (f *familyFlags) family() (family, error) {
	switch {
	case f.v4 && f.v6:
		return anyFamily, usageErrorf("-4 and -6 contradict each other")
	case f.v4:
		return ipv4Only, nil
	case f.v6:
		return ipv6Only, nil
	}
	return anyFamily, nil
}

// hostPort is an address as the user gave it: host (maybe empty, a name
// or an IP literal) and port.
type hostPort struct{ host, port string }

func (a hostPort) String() string { return net.JoinHostPort(a.host, a.port) }

// parseHostPort reads the address of listen or connect from its
// positional arguments, in nc's forms as well as Go's: "HOST PORT" or
// "HOST:PORT", and, if portOnly is set (listen), "PORT" alone for every
// address.
func parseHostPort(args []string, portOnly bool) (hostPort, error) {
	want := "HOST PORT or HOST:PORT"
	if portOnly {
		want = "PORT, HOST PORT or HOST:PORT"
	}
	var a hostPort
	switch {
	case len(args) == 2:
		a = hostPort{strings.Trim(args[0], "[]"), args[1]}
	case len(args) == 1 && portOnly && isPort(args[0]):
		a = hostPort{"", args[0]}
	case len(args) == 1:
		host, port, err := net.SplitHostPort(args[0])
		if err != nil || port == "" {
			return a, usageErrorf("address %q: want %s, like 127.0.0.1 4242", strings.Join(args, " "), want)
		}
		a = hostPort{host, port}
	default:
		return a, usageErrorf("address %q: want %s", strings.Join(args, " "), want)
	}
	if !isPort(a.port) {
		if _, err := net.LookupPort("udp", a.port); err != nil {
			return a, usageErrorf("port %q: want a number from 0 to 65535", a.port)
		}
	}
	return a, nil
}

// isPort reports whether s is a port number.
func isPort(s string) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && n <= 65535
}

// listenAddr returns the address to listen on for a, restricted to fam:
// an empty host is every address of the family.
func listenAddr(ctx context.Context, a hostPort, fam family) (string, error) {
	switch {
	case a.host == "" && fam == ipv4Only:
		a.host = "0.0.0.0"
	case a.host == "" && fam == ipv6Only:
		a.host = "::"
	case a.host != "" && fam != anyFamily:
		ip, err := resolveOne(ctx, a.host, fam)
		if err != nil {
			return "", err
		}
		a.host = ip.String()
	}
	return a.String(), nil
}

// dialAddr returns the address to dial for a: as it is, or, with -4 or
// -6, the host's first address of that family (the transport tries each
// of a name's addresses in turn otherwise).
func dialAddr(ctx context.Context, a hostPort, fam family) (string, error) {
	if fam == anyFamily {
		return a.String(), nil
	}
	ip, err := resolveOne(ctx, a.host, fam)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip.String(), a.port), nil
}

// resolveOne returns host's first address of family fam.
func resolveOne(ctx context.Context, host string, fam family) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Unmap().Is4() != (fam == ipv4Only) {
			return netip.Addr{}, usageErrorf("%s is not an %s address", host, map[family]string{ipv4Only: "IPv4", ipv6Only: "IPv6"}[fam])
		}
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, fam.network(), host)
	if err != nil {
		return netip.Addr{}, err // names the host and what the resolver said
	}
	return ips[0].Unmap(), nil
}

// shownAddr is the address to print for a listener asked to listen on a:
// the host as asked, with the port it really got.
func shownAddr(a hostPort, bound net.Addr) string {
	port := a.port
	if _, p, err := net.SplitHostPort(bound.String()); err == nil {
		port = p
	}
	return net.JoinHostPort(a.host, port)
}
