package storage

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// KeySlot is one LUKS2 key slot as the header describes it.
type KeySlot struct {
	Slot      int    `json:"slot"`
	Type      string `json:"type"`
	KeyBits   int    `json:"keyBits"`
	Cipher    string `json:"cipher"` // of the key material area
	PBKDF     string `json:"pbkdf"`
	Time      int    `json:"time,omitempty"`
	MemoryKiB int    `json:"memoryKiB,omitempty"`
	Threads   int    `json:"threads,omitempty"`
}

// luksHeader is what qwen-appliance reads from a LUKS2 header.
type luksHeader struct {
	Cipher     string    `json:"cipher"` // of the data segment
	SectorSize int       `json:"sectorSize"`
	KeyBits    int       `json:"keyBits"` // of the volume key
	KeySlots   []KeySlot `json:"keySlots"`
}

// parseLUKSDump reads the JSON of `cryptsetup luksDump --dump-json-metadata`.
func parseLUKSDump(data []byte) (*luksHeader, error) {
	var raw struct {
		Keyslots map[string]struct {
			Type    string `json:"type"`
			KeySize int    `json:"key_size"`
			Area    struct {
				Encryption string `json:"encryption"`
			} `json:"area"`
			KDF struct {
				Type   string `json:"type"`
				Time   int    `json:"time"`
				Memory int    `json:"memory"`
				CPUs   int    `json:"cpus"`
			} `json:"kdf"`
		} `json:"keyslots"`
		Segments map[string]struct {
			Type       string `json:"type"`
			Encryption string `json:"encryption"`
			SectorSize int    `json:"sector_size"`
		} `json:"segments"`
		Digests map[string]struct {
			Segments []string `json:"segments"`
		} `json:"digests"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse LUKS2 header: %w", err)
	}
	seg, ok := raw.Segments["0"]
	if !ok || seg.Type != "crypt" {
		return nil, fmt.Errorf("parse LUKS2 header: no crypt segment 0")
	}
	h := &luksHeader{Cipher: seg.Encryption, SectorSize: seg.SectorSize}
	for name, ks := range raw.Keyslots {
		n, err := strconv.Atoi(name)
		if err != nil || n < 0 || n > 31 {
			return nil, fmt.Errorf("parse LUKS2 header: key slot %q is not a number from 0 to 31", name)
		}
		if ks.KeySize <= 0 || ks.KeySize > 1024 {
			return nil, fmt.Errorf("parse LUKS2 header: key slot %d: key size %d", n, ks.KeySize)
		}
		h.KeySlots = append(h.KeySlots, KeySlot{Slot: n, Type: ks.Type, KeyBits: ks.KeySize * 8, Cipher: ks.Area.Encryption,
			PBKDF: ks.KDF.Type, Time: ks.KDF.Time, MemoryKiB: ks.KDF.Memory, Threads: ks.KDF.CPUs})
		h.KeyBits = max(h.KeyBits, ks.KeySize*8)
	}
	sort.Slice(h.KeySlots, func(i, j int) bool { return h.KeySlots[i].Slot < h.KeySlots[j].Slot })
	return h, nil
}
