package mux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bpmux/bp/framing"
)

// This file is the session's control lanes: SETTINGS, PING and GOAWAY.

// controlWriter owns this side's control lane: SETTINGS first, then the
// session frames queued in the pend* fields.
func (sess *Session) controlWriter() {
	ctl, err := sess.conn.OpenControl(sess.ctx)
	if err != nil {
		sess.fail(err)
		return
	}
	b := make([]byte, 0, 256)
	b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeSettings}, Settings: framing.Settings{
		InitialWindow:   sess.cfg.InitialWindow,
		MaxFramePayload: sess.cfg.MaxFramePayload,
		MaxStreams:      uint64(sess.cfg.MaxStreams),
		BudgetSignal:    1, // this side reads BUDGET_LIMITED (stream_observe.go)
		Compression:     uint64(sess.compress.accepts),
		RetryAfter:      1, // this side reads RESET's RETRY_AFTER (admission.go)
	}})
	goAway, goAwayDone := false, false
	for {
		if len(b) > 0 {
			if _, err := ctl.Write(b); err != nil {
				sess.fail(err)
				return
			}
		}
		select {
		case <-sess.ctlSignal:
		case <-sess.done:
			return
		}
		b = b[:0]
		sess.mu.Lock()
		if sess.pendPingAck {
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypePing, Flags: framing.FlagACK}, PingData: sess.pingAckData})
			sess.pendPingAck = false
		}
		if sess.pendPing {
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypePing}, PingData: sess.pingData})
			sess.pendPing = false
			sess.stats.pingsSent.Add(1)
		}
		if sess.pendGoAway {
			var flags framing.Flags
			if sess.doneSent {
				flags = framing.FlagDone
			}
			b = appendFrame(b, &framing.Frame{Header: framing.Header{Type: framing.TypeGoAway, Flags: flags}, LastStreamID: sess.goAwayLast, ErrorCode: sess.goAwayCode})
			sess.pendGoAway = false
			goAway, goAwayDone = true, sess.doneSent
		}
		last, code := sess.goAwayLast, sess.goAwayCode
		sess.mu.Unlock()
		if goAway {
			sess.observeGoAway(false, last, code, goAwayDone)
			goAway = false
		}
	}
}

// controlReader owns the peer's control lane.
func (sess *Session) controlReader() {
	r, err := sess.conn.AcceptControl(sess.ctx)
	if err != nil {
		sess.fail(err)
		return
	}
	br := bufio.NewReaderSize(r, laneReadBuffer)
	var payload [framing.MaxControlPayload]byte
	var f framing.Frame
	for first := true; ; first = false {
		h, err := framing.ReadHeader(br)
		sess.markHeard()
		if err == nil && h.Type.Known() && h.Type.IsStreamFrame() {
			err = sess.protocolErr(framing.ProtocolError, fmt.Errorf("%v on the control lane", h.Type))
		}
		if err == nil {
			_, err = io.ReadFull(br, payload[:h.Length])
		}
		if err != nil {
			sess.controlEnded(err)
			return
		}
		if first != (h.Type == framing.TypeSettings) { // even a frame of unknown type (SPEC.md 3.2)
			sess.protocolError(framing.SettingsError, fmt.Errorf("%v where SETTINGS must come first and once", h.Type))
			return
		}
		if !h.Type.Known() {
			if sess.useless() != nil {
				return
			}
			continue
		}
		if err := framing.DecodePayload(&f, h, payload[:h.Length]); err != nil {
			sess.protocolError(codeFor(err), err)
			return
		}
		if err := sess.onControl(&f); err != nil {
			return
		}
	}
}

func (sess *Session) controlEnded(err error) {
	if sess.isClosed() {
		return
	}
	switch {
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		sess.protocolError(framing.ProtocolError, errors.New("peer ended its control lane"))
	case errors.Is(err, framing.ErrMalformed) || errors.Is(err, framing.ErrFrameSize):
		sess.protocolError(codeFor(err), err)
	default:
		sess.fail(err)
	}
}

func (sess *Session) onControl(f *framing.Frame) error {
	switch f.Type {
	case framing.TypeSettings:
		return sess.applySettings(f.Settings)
	case framing.TypePing:
		if f.Flags&framing.FlagACK != 0 {
			sess.mu.Lock()
			match := sess.pingWaiting && f.PingData == sess.pingData
			var rtt time.Duration
			if match {
				sess.pingWaiting = false
				rtt = sess.cfg.Now().Sub(sess.pingSentAt)
				sess.pingRTT.Store(int64(rtt))
			}
			sess.mu.Unlock()
			if !match {
				return sess.useless()
			}
			sess.observeRTT(rtt)
			return nil
		}
		sess.stats.pingsRecvd.Add(1)
		if err := sess.useless(); err != nil {
			return err
		}
		sess.mu.Lock()
		sess.pendPingAck, sess.pingAckData = true, f.PingData
		sess.mu.Unlock()
		signal(sess.ctlSignal)
	case framing.TypeGoAway:
		last := f.LastStreamID
		sess.mu.Lock()
		var err error
		switch {
		case last != 0 && sess.isPeerID(last):
			err = fmt.Errorf("GOAWAY names stream %d, which this side did not open", last)
		case sess.goAwayRecvd && last > sess.peerGoAwayLast:
			err = fmt.Errorf("GOAWAY raised Last Stream ID from %d to %d", sess.peerGoAwayLast, last)
		}
		sess.goAwayRecvd, sess.peerGoAwayLast = true, last
		sess.doneRecvd = sess.doneRecvd || f.Flags&framing.FlagDone != 0
		closeNow := err == nil && sess.maybeDoneLocked()
		sess.mu.Unlock()
		if err != nil {
			return sess.protocolErr(framing.ProtocolError, err)
		}
		sess.observeGoAway(true, last, f.ErrorCode, f.Flags&framing.FlagDone != 0)
		signal(sess.ctlSignal)
		if closeNow {
			sess.closeGracefully()
		}
	}
	return nil
}

func (sess *Session) applySettings(st framing.Settings) error {
	if st.InitialWindow != 0 && st.InitialWindow < DefaultInitialWindow {
		return sess.protocolErr(framing.SettingsError, fmt.Errorf("SETTINGS_INITIAL_WINDOW %d below %d", st.InitialWindow, DefaultInitialWindow))
	}
	if st.MaxFramePayload != 0 && st.MaxFramePayload < DefaultMaxFramePayload {
		return sess.protocolErr(framing.SettingsError, fmt.Errorf("SETTINGS_MAX_FRAME_PAYLOAD %d below %d", st.MaxFramePayload, DefaultMaxFramePayload))
	}
	if st.MaxFramePayload != 0 {
		sess.peerMaxFrame.Store(st.MaxFramePayload)
	}
	sess.peerBudgetSignal.Store(st.BudgetSignal == 1)
	sess.peerSettled(st.Compression)
	sess.peerRetryAfter.Store(st.RetryAfter == 1)
	sess.settingsRecvd.Store(true)
	if st.InitialWindow == 0 {
		return nil
	}
	sess.peerInitial.Store(st.InitialWindow)
	sess.mu.Lock()
	streams := make([]*Stream, 0, len(sess.streams))
	for _, s := range sess.streams {
		streams = append(streams, s)
	}
	sess.mu.Unlock()
	for _, s := range streams { // the initial window applies to streams already open
		s.mu.Lock()
		s.send.OnUpdate(st.InitialWindow)
		s.mu.Unlock()
		s.wakeWriter()
	}
	return nil
}
