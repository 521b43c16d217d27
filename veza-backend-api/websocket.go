// Server side of RFC 6455 on the standard library: handshake, framing, ping/pong, close.
package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	// A demo never needs more; refuse anything bigger instead of buffering it.
	maxMessage = 1 << 20
	// After our close frame, how long the peer has to answer it before the TCP connection closes.
	closeGrace = 500 * time.Millisecond

	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocolError = 1002
	closeTooBig        = 1009
)

var (
	// errPeerClosed: the peer sent a close frame (already answered) or answered ours.
	errPeerClosed = errors.New("closed by peer")
	// errCloseSent: our close frame is out, so no data frame may follow it.
	errCloseSent = errors.New("close frame already sent")
)

// protocolError ends a session with a close frame carrying code.
type protocolError struct {
	code   uint16
	reason string
}

func (e *protocolError) Error() string { return e.reason }

// upgrade completes the handshake and hands the connection to a session goroutine, or answers 400.
func (a *app) upgrade(w http.ResponseWriter, r *http.Request) int {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "websocket") || key == "" {
		return sendText(w, http.StatusBadRequest, "expected a WebSocket upgrade\n")
	}
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		return sendText(w, http.StatusInternalServerError, "connection cannot be upgraded\n")
	}
	conn, buffered, err := hijacker.Hijack()
	if err != nil {
		return sendText(w, http.StatusInternalServerError, "connection cannot be upgraded\n")
	}
	_ = conn.SetDeadline(time.Time{}) // the server's header timeout must not end a long-lived session
	fmt.Fprintf(buffered.Writer, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\n\r\n", acceptKey(key))
	if err := buffered.Writer.Flush(); err != nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	session := &session{conn: conn, reader: buffered.Reader}
	if !a.sessions.add(session) {
		session.close(closeGoingAway, "server shutting down")
		return http.StatusSwitchingProtocols
	}
	go func() {
		defer a.sessions.remove(session)
		session.greetAndEcho(a.instance)
	}()
	return http.StatusSwitchingProtocols
}

func acceptKey(key string) string {
	digest := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(digest[:])
}

// session is one open WebSocket; frames are written whole under writeLock, since the
// drain sends its close frame from another goroutine.
type session struct {
	conn      net.Conn
	reader    *bufio.Reader
	writeLock sync.Mutex
	closeSent bool // guarded by writeLock: after our close frame, no more data frames (RFC 6455 5.5.1)
}

func (s *session) greetAndEcho(instance string) {
	defer s.conn.Close()
	if err := s.sendJSON(greeting{Instance: instance, Version: version}); err != nil {
		return
	}
	for {
		message, err := s.receiveText()
		var refused *protocolError
		switch {
		case errors.As(err, &refused):
			s.close(refused.code, refused.reason)
			return
		case err != nil:
			return // peer closed, connection dropped, or our close grace ran out
		}
		// After the drain's close frame, keep reading: the peer's answering close ends the loop.
		if err := s.sendJSON(echo{Instance: instance, Echo: message}); err != nil && err != errCloseSent {
			return
		}
	}
}

// goAway starts the closing handshake for the drain; the session's own loop reads the
// answer, or gives up after closeGrace, and then closes the connection.
func (s *session) goAway() {
	_ = s.conn.SetWriteDeadline(time.Now().Add(closeGrace)) // a peer that reads nothing must not stall the drain
	_ = s.writeFrame(opClose, closePayload(closeGoingAway, "server shutting down"))
	_ = s.conn.SetReadDeadline(time.Now().Add(closeGrace))
}

// close sends a close frame and closes the connection without waiting for an answer.
func (s *session) close(code uint16, reason string) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(closeGrace))
	_ = s.writeFrame(opClose, closePayload(code, reason))
	s.conn.Close()
}

func closePayload(code uint16, reason string) []byte {
	payload := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(payload, code)
	return append(payload, reason...)
}

func (s *session) sendJSON(value interface{}) error {
	payload, err := json.Marshal(value) // invalid UTF-8 in a message becomes U+FFFD here
	if err != nil {
		return err
	}
	return s.writeFrame(opText, payload)
}

func (s *session) writeFrame(opcode byte, payload []byte) error {
	s.writeLock.Lock()
	defer s.writeLock.Unlock()
	if s.closeSent {
		return errCloseSent
	}
	s.closeSent = opcode == opClose
	header := []byte{0x80 | opcode, 0}
	switch length := len(payload); {
	case length < 126:
		header[1] = byte(length)
	case length < 1<<16:
		header[1] = 126
		header = binary.BigEndian.AppendUint16(header, uint16(length))
	default:
		header[1] = 127
		header = binary.BigEndian.AppendUint64(header, uint64(length))
	}
	_, err := s.conn.Write(append(header, payload...))
	return err
}

// receiveText returns the next whole data message (binary ones too, as text), answering
// pings on the way. The loop ends with the message, an error, or the connection.
func (s *session) receiveText() (string, error) {
	var message []byte
	fragmented := false
	for {
		final, opcode, payload, err := s.readFrame()
		if err != nil {
			return "", err
		}
		switch opcode {
		case opPing:
			if err := s.writeFrame(opPong, payload); err != nil {
				return "", err
			}
		case opPong:
		case opClose:
			s.answerClose(payload)
			return "", errPeerClosed
		case opText, opBinary, opContinuation:
			if (opcode == opContinuation) != fragmented {
				return "", &protocolError{closeProtocolError, "unexpected continuation frame"}
			}
			if len(message)+len(payload) > maxMessage {
				return "", &protocolError{closeTooBig, "message too large"}
			}
			message = append(message, payload...)
			if final {
				return string(message), nil
			}
			fragmented = true
		default:
			return "", &protocolError{closeProtocolError, fmt.Sprintf("unknown opcode %d", opcode)}
		}
	}
}

// answerClose echoes the peer's status code, unless this close answers our own.
func (s *session) answerClose(payload []byte) {
	if len(payload) >= 2 {
		payload = payload[:2]
	} else {
		payload = closePayload(closeNormal, "")
	}
	_ = s.writeFrame(opClose, payload)
}

func (s *session) readFrame() (final bool, opcode byte, payload []byte, err error) {
	var head [2]byte
	if _, err = io.ReadFull(s.reader, head[:]); err != nil {
		return
	}
	final, opcode = head[0]&0x80 != 0, head[0]&0x0F
	masked, length := head[1]&0x80 != 0, uint64(head[1]&0x7F)
	if length, err = s.extendedLength(length); err != nil {
		return
	}
	switch {
	case head[0]&0x70 != 0:
		err = &protocolError{closeProtocolError, "reserved bits set without an extension"}
	case !masked:
		err = &protocolError{closeProtocolError, "client frames must be masked (RFC 6455 5.1)"}
	case opcode >= opClose && (!final || length > 125):
		err = &protocolError{closeProtocolError, "control frames must be whole and short"}
	case length > maxMessage:
		err = &protocolError{closeTooBig, "frame too large"}
	}
	if err != nil {
		return
	}
	var mask [4]byte
	if _, err = io.ReadFull(s.reader, mask[:]); err != nil {
		return
	}
	payload = make([]byte, length)
	if _, err = io.ReadFull(s.reader, payload); err != nil {
		return
	}
	for index := range payload {
		payload[index] ^= mask[index%4]
	}
	return
}

func (s *session) extendedLength(short uint64) (uint64, error) {
	var size int
	switch short {
	case 126:
		size = 2
	case 127:
		size = 8
	default:
		return short, nil
	}
	var extended [8]byte
	if _, err := io.ReadFull(s.reader, extended[8-size:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(extended[:]), nil
}

// sessionSet tracks open sessions so the drain can close them and wait for them.
type sessionSet struct {
	lock     sync.Mutex
	open     map[*session]struct{}
	closing  bool
	finished sync.WaitGroup
}

func newSessionSet() *sessionSet {
	return &sessionSet{open: map[*session]struct{}{}}
}

// add registers a session; false once the drain has started.
func (set *sessionSet) add(s *session) bool {
	set.lock.Lock()
	defer set.lock.Unlock()
	if set.closing {
		return false
	}
	set.open[s] = struct{}{}
	set.finished.Add(1)
	return true
}

func (set *sessionSet) remove(s *session) {
	set.lock.Lock()
	defer set.lock.Unlock()
	delete(set.open, s)
	set.finished.Done()
}

// goAway refuses new sessions and starts closing the open ones, all at once.
func (set *sessionSet) goAway() {
	set.lock.Lock()
	defer set.lock.Unlock()
	set.closing = true
	for s := range set.open {
		go s.goAway()
	}
}

// wait reports whether every session ended before ctx did.
func (set *sessionSet) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		set.finished.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
