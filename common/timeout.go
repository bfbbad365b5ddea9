package common

import (
	"context"
	"errors"
)

// IsTimeout reports whether err is a deadline running out: a context's or
// an I/O deadline's (net.Error, os.ErrDeadlineExceeded).
func IsTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &te) && te.Timeout()
}
