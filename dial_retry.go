package bp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/bpmux/bp/mux"
	"github.com/bpmux/bp/retry"
	"github.com/bpmux/bp/transport"
)

// DialConfig holds the options of a client's Dial, as ListenConfig holds
// a listener's. The zero value is Dial with the defaults: one attempt.
type DialConfig struct {
	// Session configures the session; nil means the defaults.
	Session *mux.Config
	// Retry, if set, makes Dial try again after a failure that may pass:
	// a server that refused the connection (over its session or handshake
	// cap, or its SessionRate; transport.ErrConnRefused) or a handshake
	// that timed out (transport.ErrIdleTimeout). Nothing else is retried:
	// not an invalid argument, not a failed TLS verification, not the end
	// of ctx. It waits between attempts with exponential backoff and full
	// jitter (see package retry), so that clients refused together do not
	// come back together, and honours a retry-after hint when an error
	// carries one (none of today's bindings can carry one with a refusal:
	// see ListenConfig). The policy's own Retryable, if set, can only
	// narrow this further. Nil means a single attempt.
	//
	// A retrying Dial should have a deadline on its context, or a
	// MaxAttempts in the policy (its default is 5), to bound it.
	Retry *retry.Policy
}

// Dial connects to a bp/1 server at addr and starts a client session, as
// the function Dial does, trying again by dc.Retry. When it gives up, the
// error wraps the last attempt's (errors.Is sees transport.ErrConnRefused
// through it) and, if the attempts ran out or the next one could not
// start before ctx's deadline, retry.ErrExhausted or retry.ErrDeadline.
func (dc DialConfig) Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*mux.Session, error) {
	if ctx == nil || dc.Retry == nil {
		return dial1(ctx, addr, tlsConf, dc.Session) // it reports a nil ctx
	}
	p := *dc.Retry
	user := p.Retryable
	p.Retryable = func(err error) bool {
		return Retryable(err) && (user == nil || user(err))
	}
	return retry.DoValue(ctx, &p, func(ctx context.Context) (*mux.Session, error) {
		return dial1(ctx, addr, tlsConf, dc.Session)
	})
}

// Retryable reports whether an error of Dial is worth another attempt
// later: the server refused the connection (transport.ErrConnRefused) or
// did not complete the handshake in time (transport.ErrIdleTimeout). An
// invalid argument (ErrInvalidArgument), a failed certificate
// verification and every other error are not: trying again would fail
// the same way. DialConfig.Retry retries only what Retryable accepts.
func Retryable(err error) bool {
	var (
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		host    x509.HostnameError
		verify  *tls.CertificateVerificationError
	)
	switch {
	case err == nil,
		errors.Is(err, ErrInvalidArgument),
		errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &host):
		return false
	}
	return errors.Is(err, transport.ErrConnRefused) || errors.Is(err, transport.ErrIdleTimeout)
}
