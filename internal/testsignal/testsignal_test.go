package testsignal

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWaitForSeesValuesSignalledBeforeAndAfter(t *testing.T) {
	t.Parallel()
	var l Log[int]
	l.Signal(99) // before Init: nothing, no panic
	l.Init()
	l.Signal(1)
	go func() { l.Signal(2); l.Signal(3) }()
	require.Equal(t, 1, l.WaitFor(t, 10*time.Second, "one", func(v int) bool { return v == 1 }), "a value signalled before the wait")
	require.Equal(t, 3, l.WaitFor(t, 10*time.Second, "three", func(v int) bool { return v == 3 }), "and one signalled during it")
}
