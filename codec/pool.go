package codec

import (
	"errors"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Memory each lent codec is charged, by block size. They are upper bounds
// of what an Encoder or Decoder holds once it has been used with every
// codec, measured by TestChargeCoversMemory.
func encoderCharge(maxBlock int) uint64 {
	// zstd's fastest encoder with lower memory: its tables, and history
	// of twice its window; plus the output buffer.
	return uint64(MaxPrefixLen+s2.MaxEncodedLen(maxBlock)) + zstdEncoderFixed + 2*uint64(windowFor(maxBlock))
}

func decoderCharge(maxBlock int) uint64 {
	// zstd's decoder with lower memory: block and sequence buffers, and a
	// history of its window; plus the input and output buffers.
	return 2*uint64(maxBlock) + zstdDecoderFixed + 2*uint64(windowFor(maxBlock))
}

const (
	zstdEncoderFixed = 192 << 10
	zstdDecoderFixed = 192 << 10
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// MaxBlock is the largest block the pool's codecs handle: the most
	// application bytes of one frame. At most MaxBlock; default MaxBlock.
	MaxBlock int
	// MaxEncoders and MaxDecoders bound how many of each the pool makes;
	// at most that many writers compress, or readers decode, at once.
	// Default 4 encoders and 2 decoders.
	MaxEncoders, MaxDecoders int
	// Charge takes n bytes from the memory budget the codecs are charged
	// to, or reports false when it cannot; Release gives them back. Nil
	// means memory is not accounted.
	Charge  func(n uint64) bool
	Release func(n uint64)
}

// Pool lends encoders and decoders to the streams of one session, so that
// a stream costs no codec memory while it is not writing or reading a
// compressed frame. It makes them as they are first needed, up to its
// limits, charging each one's memory before making it; it never frees
// one while the session lives, and Close gives all the charge back.
type Pool struct {
	cfg PoolConfig

	mu       sync.Mutex
	closed   bool
	encs     []*Encoder // idle
	decs     []*Decoder // idle
	encMade  int
	decMade  int
	charged  uint64
	decReady chan struct{} // a token per decoder returned while others wait
}

// ErrPoolClosed is returned by a Pool after Close.
var ErrPoolClosed = errors.New("codec: pool closed")

// NewPool returns a pool; a zero config takes the defaults.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.MaxBlock <= 0 || cfg.MaxBlock > MaxBlock {
		cfg.MaxBlock = MaxBlock
	}
	if cfg.MaxEncoders <= 0 {
		cfg.MaxEncoders = 4
	}
	if cfg.MaxDecoders <= 0 {
		cfg.MaxDecoders = 2
	}
	return &Pool{
		cfg:      cfg,
		decReady: make(chan struct{}, cfg.MaxDecoders),
	}
}

// MaxBlock is the largest block the pool's codecs take.
func (p *Pool) MaxBlock() int { return p.cfg.MaxBlock }

// EncoderCharge and DecoderCharge are what one encoder or decoder of this
// pool is charged.
func (p *Pool) EncoderCharge() uint64 { return encoderCharge(p.cfg.MaxBlock) }

// DecoderCharge is what one decoder of this pool is charged.
func (p *Pool) DecoderCharge() uint64 { return decoderCharge(p.cfg.MaxBlock) }

// Charged is the memory the pool holds charged now.
func (p *Pool) Charged() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.charged
}

func (p *Pool) charge(n uint64) bool {
	if p.cfg.Charge != nil && !p.cfg.Charge(n) {
		return false
	}
	p.charged += n
	return true
}

// ReserveDecoder makes one decoder ahead of need, so that a decoder is
// always available to a session that announced it accepts compression;
// false if the budget cannot hold it.
func (p *Pool) ReserveDecoder() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.decMade >= p.cfg.MaxDecoders || !p.charge(p.DecoderCharge()) {
		return false
	}
	p.decMade++
	p.decs = append(p.decs, newDecoder(p.cfg.MaxBlock))
	return true
}

// Encoder lends an encoder, or returns nil when all it may make are lent
// or the budget cannot hold another: the caller then sends its frame raw
// rather than wait, since a lent encoder stays lent while its frame is
// written, which a stalled transport can make long.
func (p *Pool) Encoder() *Encoder {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil
	case len(p.encs) > 0:
		e := p.encs[len(p.encs)-1]
		p.encs = p.encs[:len(p.encs)-1]
		return e
	case p.encMade < p.cfg.MaxEncoders && p.charge(p.EncoderCharge()):
		p.encMade++
		return newEncoder(p.cfg.MaxBlock)
	}
	return nil
}

// PutEncoder returns a lent encoder.
func (p *Pool) PutEncoder(e *Encoder) {
	p.mu.Lock()
	if !p.closed {
		p.encs = append(p.encs, e)
	}
	p.mu.Unlock()
}

// Decoder lends a decoder, waiting while all it may make are lent, until
// done is closed. It fails when it has none to lend and the budget cannot
// hold one (ReserveDecoder avoids that), or after Close.
func (p *Pool) Decoder(done <-chan struct{}) (*Decoder, error) {
	for {
		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, ErrPoolClosed
		case len(p.decs) > 0:
			d := p.decs[len(p.decs)-1]
			p.decs = p.decs[:len(p.decs)-1]
			p.mu.Unlock()
			return d, nil
		case p.decMade < p.cfg.MaxDecoders && p.charge(p.DecoderCharge()):
			p.decMade++
			p.mu.Unlock()
			return newDecoder(p.cfg.MaxBlock), nil
		case p.decMade == 0:
			p.mu.Unlock()
			return nil, errors.New("codec: no memory for a decoder")
		}
		p.mu.Unlock()
		select {
		case <-p.decReady:
		case <-done:
			return nil, ErrPoolClosed
		}
	}
}

// PutDecoder returns a lent decoder.
func (p *Pool) PutDecoder(d *Decoder) {
	p.mu.Lock()
	if !p.closed {
		p.decs = append(p.decs, d)
	}
	p.mu.Unlock()
	select {
	case p.decReady <- struct{}{}:
	default:
	}
}

// Close drops the idle codecs and gives back everything the pool was
// charged; codecs lent out are dropped when they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for _, e := range p.encs {
		if e.zstd != nil {
			e.zstd.Close()
		}
	}
	for _, d := range p.decs {
		if d.zstd != nil {
			d.zstd.Close()
		}
	}
	p.encs, p.decs = nil, nil
	if p.cfg.Release != nil && p.charged > 0 {
		p.cfg.Release(p.charged)
	}
	p.charged = 0
}
