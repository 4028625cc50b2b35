package main

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpmux/bp/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCertAndCA: a listener with --cert/--key, a client verifying it with
// --ca, and one with --insecure, which says so.
func TestCertAndCA(t *testing.T) {
	dir := t.TempDir()
	cert, err := transport.SelfSigned("127.0.0.1")
	require.NoError(t, err)
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600))

	for _, tc := range []struct {
		name string
		args []string
		note string
	}{
		{"ca", []string{"--ca", certFile}, ""},
		{"insecure", []string{"--insecure"}, "NOT verifying"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, addr, fp := startListener(t, "listen", strings.NewReader("back"), nil, "--cert", certFile, "--key", keyFile)
			assert.Equal(t, transport.Fingerprint(cert.Certificate[0]), fp)
			c := start(t, "connect", strings.NewReader("hello"), nil, append(append([]string{"connect"}, tc.args...), addr)...)
			got, err := io.ReadAll(l.stdout)
			require.NoError(t, err)
			back, err := io.ReadAll(c.stdout)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(got))
			assert.Equal(t, "back", string(back))
			assert.Equal(t, 0, c.wait(30*time.Second))
			assert.Equal(t, 0, l.wait(30*time.Second))
			if tc.note != "" {
				assert.Contains(t, c.stderrText(), tc.note)
			}
		})
	}
}
