package transport

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// Helpers the tests of every binding share.

// openAccept opens a lane on a, sends msg so that b sees it, and accepts
// it on b.
func openAccept(t *testing.T, ctx context.Context, a, b Conn, msg string) (Lane, Lane) {
	t.Helper()
	la, err := a.OpenLane(ctx)
	require.NoError(t, err)
	_, err = la.Write([]byte(msg))
	require.NoError(t, err)
	lb, err := b.AcceptLane(ctx)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(lb, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
	return la, lb
}

// requireLaneError checks that err is a *LaneError with code, from the
// peer if remote.
func requireLaneError(t *testing.T, err error, code uint64, remote bool) {
	t.Helper()
	var le *LaneError
	require.True(t, errors.As(err, &le), "want a *LaneError, got %T %v", err, err)
	require.Equal(t, code, le.Code, "code")
	require.Equal(t, remote, le.Remote, "remote")
}

// requireAppError checks that err is an *ApplicationError with code, from
// the peer if remote.
func requireAppError(t *testing.T, err error, code uint64, remote bool) {
	t.Helper()
	var ae *ApplicationError
	require.True(t, errors.As(err, &ae), "want an *ApplicationError, got %T %v", err, err)
	require.Equal(t, code, ae.Code, "code")
	require.Equal(t, remote, ae.Remote, "remote")
}
