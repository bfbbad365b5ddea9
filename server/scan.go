package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxJSONDepth bounds nesting as encoding/json does (a real heartbeat nests 4 deep).
const maxJSONDepth = 10000

var errNotJSON = errors.New("not JSON")

// headScanner checks a heartbeat's JSON syntax and picks its top-level
// "node" and "addr" in one pass. It accepts exactly what json.Valid accepts
// (up to maxJSONDepth; tested against it) at several times its speed: the
// heartbeat is the platform's hot path and its body is mostly a container
// list the server only stores.
type headScanner struct {
	b    []byte
	i    int
	head *heartbeatHead
}

// read checks that body is one JSON object and reads its "node" and "addr"
// as the leader's json.Unmarshal will (keys matched case-insensitively, the
// last occurrence wins).
func (h *heartbeatHead) read(body []byte) error {
	s := headScanner{b: body, head: h}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		if s.value(0) != nil {
			return errNotJSON
		}
		return errors.New("not a JSON object")
	}
	if err := s.object(0, true); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errNotJSON
	}
	return nil
}

func (s *headScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *headScanner) value(depth int) error {
	s.ws()
	if s.i >= len(s.b) {
		return errNotJSON
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth+1, false)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return errNotJSON
}

// object scans {...} starting at '{'; top objects record node and addr.
func (s *headScanner) object(depth int, top bool) error {
	if depth > maxJSONDepth {
		return errors.New("nested too deep")
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return errNotJSON
		}
		key, esc, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errNotJSON
		}
		s.i++
		var field *string
		if top {
			k := key[1 : len(key)-1]
			if esc {
				var u string
				if json.Unmarshal(key, &u) != nil {
					return errNotJSON
				}
				k = []byte(u)
			}
			switch {
			case bytes.EqualFold(k, []byte("node")):
				field = &s.head.Node
			case bytes.EqualFold(k, []byte("addr")):
				field = &s.head.Addr
			}
		}
		if field != nil {
			if err := s.stringField(field, string(key[1:len(key)-1])); err != nil {
				return err
			}
		} else if err := s.value(depth); err != nil {
			return err
		}
		if done, err := s.sep('}'); done || err != nil {
			return err
		}
	}
}

// sep reads what follows a member or element: ',' (more to come) or
// closing (done).
func (s *headScanner) sep(closing byte) (done bool, err error) {
	s.ws()
	if s.i >= len(s.b) {
		return false, errNotJSON
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		return false, nil
	case closing:
		s.i++
		return true, nil
	}
	return false, errNotJSON
}

// stringField reads a string (or null, which leaves it unchanged, as
// json.Unmarshal does) into dst.
func (s *headScanner) stringField(dst *string, name string) error {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		return s.lit("null")
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		if s.value(0) != nil {
			return errNotJSON
		}
		return fmt.Errorf("%s: not a string", name)
	}
	raw, esc, err := s.str()
	if err != nil {
		return err
	}
	if !esc {
		*dst = string(raw[1 : len(raw)-1])
		return nil
	}
	return json.Unmarshal(raw, dst)
}

func (s *headScanner) array(depth int) error {
	if depth > maxJSONDepth {
		return errors.New("nested too deep")
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.value(depth); err != nil {
			return err
		}
		if done, err := s.sep(']'); done || err != nil {
			return err
		}
	}
}

// str scans a string starting at '"' and returns it with its quotes and
// whether it holds escapes.
func (s *headScanner) str() (raw []byte, esc bool, err error) {
	start := s.i
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		if plainByte[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			s.i++
			return s.b[start:s.i], esc, nil
		case c < 0x20:
			return nil, false, errNotJSON
		case c == '\\':
			esc = true
			if s.i+1 >= len(s.b) {
				return nil, false, errNotJSON
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return nil, false, errNotJSON
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return nil, false, errNotJSON
					}
				}
				s.i += 6
			default:
				return nil, false, errNotJSON
			}
		default:
			s.i++
		}
	}
	return nil, false, errNotJSON
}

// plainByte marks the bytes a string's scan steps over without a second
// look (not a quote, backslash or control character).
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (s *headScanner) lit(word string) error {
	if !bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		return errNotJSON
	}
	s.i += len(word)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *headScanner) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return errNotJSON
	}
	switch c := s.b[s.i]; {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return errNotJSON
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return errNotJSON
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return errNotJSON
		}
	}
	return nil
}

func (s *headScanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}
