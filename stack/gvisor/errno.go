package gvisor

import (
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// errno translates a netstack error into the errno Linux gives for the same
// condition, so that the shim can hand it to the application unchanged.
// nil maps to nil. ErrClosedForReceive is not an error to applications (it
// is EOF); Read handles it before calling errno.
func errno(err tcpip.Error) error {
	if err == nil {
		return nil
	}
	return errnoOf(err)
}

func errnoOf(err tcpip.Error) syscall.Errno {
	switch err.(type) {
	case *tcpip.ErrWouldBlock:
		return syscall.EAGAIN
	case *tcpip.ErrConnectStarted:
		return syscall.EINPROGRESS
	case *tcpip.ErrAlreadyConnecting:
		return syscall.EALREADY
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrAborted:
		// The handshake was cut short by a local close/abort.
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE
	case *tcpip.ErrClosedForReceive:
		// Only reached where EOF is not a possible answer (e.g. a write
		// path); Linux reports a dead pipe there.
		return syscall.EPIPE
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrNoPortAvailable:
		// Linux: connect() with the ephemeral range exhausted.
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostDown:
		return syscall.EHOSTDOWN
	case *tcpip.ErrNoNet:
		return syscall.ENONET
	case *tcpip.ErrAlreadyBound:
		return syscall.EINVAL
	case *tcpip.ErrInvalidEndpointState:
		return syscall.EINVAL
	case *tcpip.ErrInvalidOptionValue:
		return syscall.EINVAL
	case *tcpip.ErrInvalidPortRange:
		return syscall.EINVAL
	case *tcpip.ErrMalformedHeader:
		return syscall.EINVAL
	case *tcpip.ErrUnknownProtocol:
		return syscall.EINVAL
	case *tcpip.ErrMissingRequiredFields:
		return syscall.EINVAL
	case *tcpip.ErrMulticastInputCannotBeOutput:
		return syscall.EINVAL
	case *tcpip.ErrInvalidNICID:
		return syscall.EINVAL
	case *tcpip.ErrUnknownProtocolOption:
		return syscall.ENOPROTOOPT
	case *tcpip.ErrUnknownNICID, *tcpip.ErrUnknownDevice:
		return syscall.ENODEV
	case *tcpip.ErrDuplicateAddress, *tcpip.ErrDuplicateNICID:
		return syscall.EEXIST
	case *tcpip.ErrDestinationRequired:
		return syscall.EDESTADDRREQ
	case *tcpip.ErrNotSupported:
		return syscall.EOPNOTSUPP
	case *tcpip.ErrQueueSizeNotSupported:
		return syscall.ENOTTY
	case *tcpip.ErrNoSuchFile:
		return syscall.ENOENT
	case *tcpip.ErrBadAddress, *tcpip.ErrBadBuffer:
		return syscall.EFAULT
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS
	case *tcpip.ErrBroadcastDisabled:
		return syscall.EACCES
	case *tcpip.ErrNotPermitted:
		return syscall.EPERM
	case *tcpip.ErrAddressFamilyNotSupported:
		return syscall.EAFNOSUPPORT
	case *tcpip.ErrEndpointBusy:
		return syscall.EBUSY
	default:
		// An error this version of netstack added after this table was
		// written: EINVAL is what Linux uses for "not in a state for that".
		return syscall.EINVAL
	}
}
