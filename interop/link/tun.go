package link

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tunPath is the clone device of the TUN driver.
const tunPath = "/dev/net/tun"

// openTUN makes the TUN device name (IFF_TUN: IP packets, IFF_NO_PI: no
// packet information header) in the calling thread's network namespace and
// returns its file, non-blocking and registered with the runtime poller, so
// that Close interrupts a Read. The device is not persistent: it goes away
// when the file is closed.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", tunPath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), tunPath+":"+name), nil
}
