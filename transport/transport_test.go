package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFingerprint(t *testing.T) {
	cert, err := SelfSigned("127.0.0.1", "localhost")
	require.NoError(t, err)
	fp := Fingerprint(cert.Certificate[0])
	require.True(t, strings.HasPrefix(fp, FingerprintPrefix))
	require.Len(t, fp, len(FingerprintPrefix)+64)
	d, err := ParseFingerprint(strings.ToUpper(fp[:7]) + fp[7:])
	require.NoError(t, err)
	assert.Equal(t, fp, FingerprintPrefix+hexString(d[:]))

	for _, bad := range []string{"", "sha256:", "sha1:" + fp[7:], fp[:len(fp)-1], fp + "00", "sha256:" + strings.Repeat("zz", 32)} {
		_, err := ParseFingerprint(bad)
		assert.Error(t, err, bad)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// listen starts a QUIC listener with a fresh self-signed certificate that
// accepts one connection and echoes one lane.
func listen(t *testing.T) (addr string, cert tls.Certificate) {
	t.Helper()
	cert, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	ln, err := ListenQUIC("127.0.0.1:0", ServerConfig(cert), QUICConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		defer c.CloseWithError(0, "")
		l, err := c.AcceptLane(ctx)
		if err != nil {
			return
		}
		io.Copy(l, l)
		l.CloseWrite()
		<-c.Done()
	}()
	return ln.Addr().String(), cert
}

func TestQUICPinned(t *testing.T) {
	addr, cert := listen(t)
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialQUIC(ctx, addr, conf, QUICConfig{})
	require.NoError(t, err)
	assert.True(t, c.IsClient())
	l, err := c.OpenLane(ctx)
	require.NoError(t, err)
	_, err = l.Write([]byte("ping"))
	require.NoError(t, err)
	require.NoError(t, l.CloseWrite())
	got, err := io.ReadAll(l)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(got))
	assert.Positive(t, c.RTT())
	require.NoError(t, c.CloseWithError(0, ""))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
}

func TestQUICPinMismatch(t *testing.T) {
	addr, _ := listen(t)
	other, err := SelfSigned("127.0.0.1")
	require.NoError(t, err)
	conf, err := PinnedClientConfig(Fingerprint(other.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = DialQUIC(ctx, addr, conf, QUICConfig{})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrPinMismatch)
}

func TestQUICDefaultVerificationRefusesSelfSigned(t *testing.T) {
	addr, _ := listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := DialQUIC(ctx, addr, &tls.Config{ServerName: "127.0.0.1"}, QUICConfig{})
	require.Error(t, err, "a self-signed certificate is not trusted without a pin")
	assert.False(t, errors.Is(err, ErrPinMismatch))
}

func TestQUICContextErrorsPassThrough(t *testing.T) {
	addr, cert := listen(t)
	conf, err := PinnedClientConfig(Fingerprint(cert.Certificate[0]))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialQUIC(ctx, addr, conf, QUICConfig{})
	require.NoError(t, err)
	defer c.CloseWithError(0, "")
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	_, err = c.AcceptLane(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	gone, cancelGone := context.WithCancel(ctx)
	cancelGone()
	_, err = c.AcceptLane(gone)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, ErrConnClosed)
}
