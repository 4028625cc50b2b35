package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format is the format of a trace file.
type Format int

// The formats ReadAny reads.
const (
	// FormatJSONLines is this package's own: one Record per line.
	FormatJSONLines Format = iota + 1
	// FormatQlog is a qlog JSON-SEQ file (.sqlog) holding bp/1's events
	// beside QUIC's.
	FormatQlog
)

// String names the format.
func (f Format) String() string {
	switch f {
	case FormatJSONLines:
		return "JSON lines"
	case FormatQlog:
		return "qlog"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// File is a trace file as ReadAny read it.
type File struct {
	Format  Format
	Records []Record
	// Qlog describes a qlog file (nil for JSON lines).
	Qlog *QlogInfo
}

// QlogInfo is what ReadAny tells of a qlog file beside its Records.
type QlogInfo struct {
	Header QlogHeader
	// Events counts the file's event records, and BP those of bp/1 that
	// became Records (none if the header does not declare QlogSchema).
	Events, BP int
	// Names counts the events by name, for the first MaxQlogNames names;
	// the events of any more names count under "" (a bound on what a
	// hostile file costs).
	Names map[string]int
	// Truncated is true if the file's last record was cut short (and
	// dropped).
	Truncated bool
}

// MaxQlogNames bounds the event names QlogInfo counts one by one.
const MaxQlogNames = 256

// ReadAny reads a trace file of either format, told by its first byte:
// 0x1E begins a qlog JSON-SEQ file, anything else is JSON lines (see
// Read). A qlog file is read one record at a time, and only the events
// that become Records (see QlogRecord) are kept, with a final EventEnd;
// the others are counted. At most maxRecords Records are kept (0 means no
// limit); more is an error rather than a silent cut.
func ReadAny(r io.Reader, maxRecords int) (*File, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(1)
	if len(head) == 0 {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("trace: %w", err)
		}
		return &File{Format: FormatJSONLines}, nil
	}
	if head[0] != recordSeparator {
		lead, _ := br.Peek(MaxLine)
		contained := isContainedQlog(lead)
		recs, err := Read(br, maxRecords)
		if err != nil {
			if contained {
				return nil, fmt.Errorf("%w (a qlog file in JSON, not JSON-SEQ: only .sqlog files are read)", err)
			}
			return nil, err
		}
		return &File{Format: FormatJSONLines, Records: recs}, nil
	}
	return readQlogRecords(br, maxRecords)
}

// isContainedQlog reports whether b looks like the start of a qlog file
// in the contained JSON format (.qlog).
func isContainedQlog(b []byte) bool {
	return bytes.Contains(b, []byte(`"qlog_version"`)) || bytes.Contains(b, []byte(`"file_schema"`))
}

// readQlogRecords reads a qlog file into Records, in bounded memory.
func readQlogRecords(r io.Reader, maxRecords int) (*File, error) {
	q, err := NewQlogReader(r)
	if err != nil {
		return nil, err
	}
	h := q.Header()
	info := &QlogInfo{Header: h, Names: map[string]int{}}
	f := &File{Format: FormatQlog, Qlog: info, Records: []Record{traceRecord(&h)}}
	keep := func(r Record) error {
		if maxRecords > 0 && len(f.Records) >= maxRecords {
			return fmt.Errorf("trace: more than %d records", maxRecords)
		}
		f.Records = append(f.Records, r)
		return nil
	}
	var last QlogEvent
	// Each pass reads one record; the file's length bounds them.
	for {
		ev, err := q.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		info.Events++
		if _, ok := info.Names[ev.Name]; ok || len(info.Names) < MaxQlogNames {
			info.Names[ev.Name]++
		} else {
			info.Names[""]++
		}
		rec, ok, err := QlogRecord(&h, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			if strings.HasPrefix(ev.Name, "bp:") {
				info.BP++
			}
			if err := keep(rec); err != nil {
				return nil, err
			}
		}
		last = ev
	}
	info.Truncated = q.Truncated()
	if info.Events > 0 {
		if err := keep(endRecord(&h, last)); err != nil {
			return nil, err
		}
	}
	return f, nil
}
