package window

// A minimal stand-in for the subset of testify's assert/require used by
// these tests. testify is listed in go.mod, but its dependency
// go.yaml.in/yaml/v3 has no go.sum entry, so importing it does not build;
// go.mod and go.sum are shared files, so this package keeps to the
// standard library instead. assert.X reports and continues, require.X
// stops the test.

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

type checker struct{ fatal bool }

var (
	assert  = checker{fatal: false}
	require = checker{fatal: true}
)

func (c checker) fail(t testing.TB, msg []any, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf(format, args...)
	if len(msg) > 0 {
		if f, ok := msg[0].(string); ok {
			s += ": " + fmt.Sprintf(f, msg[1:]...)
		} else {
			s += ": " + fmt.Sprint(msg...)
		}
	}
	if c.fatal {
		t.Fatal(s)
	}
	t.Error(s)
}

func (c checker) Equal(t testing.TB, want, got any, msg ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		c.fail(t, msg, "not equal:\n want %+v\n  got %+v", want, got)
	}
}

func (c checker) True(t testing.TB, v bool, msg ...any) {
	t.Helper()
	if !v {
		c.fail(t, msg, "should be true")
	}
}

func (c checker) False(t testing.TB, v bool, msg ...any) {
	t.Helper()
	if v {
		c.fail(t, msg, "should be false")
	}
}

func (c checker) Zero(t testing.TB, v any, msg ...any) {
	t.Helper()
	if v != nil && !reflect.ValueOf(v).IsZero() {
		c.fail(t, msg, "should be zero, is %+v", v)
	}
}

func (c checker) Nil(t testing.TB, v any, msg ...any) {
	t.Helper()
	if v == nil {
		return
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Func, reflect.Chan:
		if rv.IsNil() {
			return
		}
	}
	c.fail(t, msg, "should be nil, is %+v", v)
}

func (c checker) NoError(t testing.TB, err error, msg ...any) {
	t.Helper()
	if err != nil {
		c.fail(t, msg, "unexpected error: %v", err)
	}
}

func (c checker) Error(t testing.TB, err error, msg ...any) {
	t.Helper()
	if err == nil {
		c.fail(t, msg, "expected an error")
	}
}

func (c checker) ErrorIs(t testing.TB, err, target error, msg ...any) {
	t.Helper()
	if !errors.Is(err, target) {
		c.fail(t, msg, "error %v is not %v", err, target)
	}
}

func asUint(t testing.TB, v any) uint64 {
	t.Helper()
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Int() >= 0 {
			return uint64(rv.Int())
		}
	}
	t.Fatalf("check: %T %v is not a non-negative integer", v, v)
	return 0
}

func (c checker) Greater(t testing.TB, a, b any, msg ...any) {
	t.Helper()
	if x, y := asUint(t, a), asUint(t, b); x <= y {
		c.fail(t, msg, "%d should be > %d", x, y)
	}
}

func (c checker) GreaterOrEqual(t testing.TB, a, b any, msg ...any) {
	t.Helper()
	if x, y := asUint(t, a), asUint(t, b); x < y {
		c.fail(t, msg, "%d should be >= %d", x, y)
	}
}

func (c checker) LessOrEqual(t testing.TB, a, b any, msg ...any) {
	t.Helper()
	if x, y := asUint(t, a), asUint(t, b); x > y {
		c.fail(t, msg, "%d should be <= %d", x, y)
	}
}

func (c checker) Panics(t testing.TB, f func(), msg ...any) {
	t.Helper()
	if !panics(f) {
		c.fail(t, msg, "should panic")
	}
}

func (c checker) NotPanics(t testing.TB, f func(), msg ...any) {
	t.Helper()
	if panics(f) {
		c.fail(t, msg, "should not panic")
	}
}

func panics(f func()) (did bool) {
	defer func() {
		if recover() != nil {
			did = true
		}
	}()
	f()
	return false
}

func TestChecker(t *testing.T) {
	// The shim must itself fail when it should.
	ft := &fakeT{}
	assert.Equal(ft, uint64(1), uint64(2))
	assert.Equal(ft, uint64(1), 1) // different types are not equal
	assert.True(ft, false)
	assert.False(ft, true)
	assert.Zero(ft, uint64(1))
	assert.Nil(ft, new(int))
	assert.NoError(ft, errors.New("x"))
	assert.Error(ft, nil)
	assert.ErrorIs(ft, errors.New("x"), ErrFlowControl)
	assert.Greater(ft, 1, 1)
	assert.GreaterOrEqual(ft, 1, 2)
	assert.LessOrEqual(ft, 2, 1)
	assert.Panics(ft, func() {})
	assert.NotPanics(ft, func() { panic("x") })
	if ft.errors != 14 {
		t.Fatalf("shim reported %d of 14 failures", ft.errors)
	}
	ft = &fakeT{}
	assert.Equal(ft, uint64(1), uint64(1))
	assert.Zero(ft, uint64(0))
	assert.Zero(ft, nil)
	var p *int
	assert.Nil(ft, p)
	assert.Nil(ft, nil)
	assert.ErrorIs(ft, fmt.Errorf("w: %w", ErrFlowControl), ErrFlowControl)
	assert.Greater(ft, uint64(2), 1)
	assert.GreaterOrEqual(ft, 2, 2)
	assert.LessOrEqual(ft, 2, 2)
	assert.Panics(ft, func() { panic("x") })
	assert.NotPanics(ft, func() {})
	if ft.errors != 0 {
		t.Fatalf("shim reported %d false failures", ft.errors)
	}
}

type fakeT struct {
	testing.TB
	errors int
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Error(...any)          { f.errors++ }
func (f *fakeT) Fatal(...any)          { f.errors++ }
func (f *fakeT) Fatalf(string, ...any) { f.errors++ }
