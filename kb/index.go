package kb

import (
	"context"
	"fmt"
	"slices"
)

// index is the in-memory term index over every chunk and document in the
// database. It is rebuilt from the chunks when the database's generation
// moves on, and only its access part (class, access list) is reloaded when
// only the acl_generation does. SQLite stays the one durable copy.
//
// Postings are compressed lists of dense chunk (or document) numbers and
// term frequencies (see postings).
type index struct {
	gen, aclGen int64

	uni       []uint32          // CJK character below maxUni -> term number + 1 (0: none)
	cjkTerms  map[cjkKey]uint32 // other CJK characters, and pairs
	words     map[string]uint32 // Latin words and numbers
	chunkPost postings          // term -> chunks holding it
	docPost   postings          // term -> documents holding it

	chunkID  []int64
	chunkDoc []uint32 // dense document number
	chunkLen []uint16 // terms in the chunk (head and body)

	docID      []int64
	docNum     map[int64]uint32
	docLen     []uint32 // terms in the document (title and every chunk)
	docChunks  []uint32 // chunks in the document
	docChunkLn []uint64 // sum of chunkLen over its chunks
	docClass   []Class
	docColl    []string
	docACL     [][]string
}

// maxUni bounds the characters looked up by array rather than by map: the
// CJK blocks of the Basic Multilingual Plane, where nearly all text is.
const maxUni = 0x10000

// maxDense bounds the chunks (and documents) of one index: 16.7 million,
// about 6 GiB of Chinese text, far beyond what the index is sized for. It
// keeps every posting's varint within 4 bytes and the arithmetic on dense
// numbers within uint32.
const maxDense = 1 << 24

// load builds the index from the database.
func (k *DB) loadIndex(ctx context.Context) (*index, error) {
	x := &index{uni: make([]uint32, maxUni), cjkTerms: map[cjkKey]uint32{}, words: map[string]uint32{}, docNum: map[int64]uint32{}}
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT value FROM meta WHERE key = 'generation'), (SELECT value FROM meta WHERE key = 'acl_generation')`).
		Scan(&x.gen, &x.aclGen); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, title, class, collection FROM documents ORDER BY id`)
	if err != nil {
		return nil, err
	}
	var titles []string
	for rows.Next() {
		var id int64
		var title, coll string
		var class int
		if err := rows.Scan(&id, &title, &class, &coll); err != nil {
			rows.Close()
			return nil, err
		}
		x.docNum[id] = uint32(len(x.docID))
		x.docID = append(x.docID, id)
		x.docClass = append(x.docClass, Class(class))
		x.docColl = append(x.docColl, coll)
		titles = append(titles, title)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if len(x.docID) >= maxDense {
		return nil, fmt.Errorf("%d documents: more than the index can address", len(x.docID))
	}
	n := len(x.docID)
	x.docLen = make([]uint32, n)
	x.docChunks = make([]uint32, n)
	x.docChunkLn = make([]uint64, n)
	x.docACL = make([][]string, n)
	if err := x.loadACL(ctx, tx); err != nil {
		return nil, err
	}

	// Each document's terms are collected as its chunks stream past
	// (chunks come ordered by document), then counted and posted once.
	var docTerms, chunkTerms []uint32
	var count []uint16
	cur := -1
	flushDoc := func() {
		if cur >= 0 {
			postCounts(&x.docPost, docTerms, uint32(cur), &count)
		}
		docTerms = docTerms[:0]
	}
	rows, err = tx.QueryContext(ctx, `SELECT id, doc, heading, text FROM chunks ORDER BY doc, ordinal`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var titleTerms []uint32
	for rows.Next() {
		var id, doc int64
		var heading, text string
		if err := rows.Scan(&id, &doc, &heading, &text); err != nil {
			return nil, err
		}
		d, ok := x.docNum[doc]
		if !ok {
			continue // written after the documents were read
		}
		if int(d) != cur {
			flushDoc()
			cur = int(d)
			titleTerms = x.appendTerms(titleTerms[:0], titles[d])
			docTerms = append(docTerms, titleTerms...)
			x.docLen[d] += uint32(len(titleTerms))
		}
		c := uint32(len(x.chunkID))
		if c >= maxDense {
			return nil, fmt.Errorf("more than %d chunks: more than the index can address", maxDense)
		}
		// The chunk's head: its document's title and its heading path,
		// so a chunk deep in a section still matches what the section is
		// called.
		chunkTerms = append(chunkTerms[:0], titleTerms...)
		chunkTerms = x.appendTerms(chunkTerms, heading)
		body := len(chunkTerms)
		chunkTerms = x.appendTerms(chunkTerms, text)
		docTerms = append(docTerms, chunkTerms[body:]...)
		l := min(len(chunkTerms), 65535)
		postCounts(&x.chunkPost, chunkTerms, c, &count)
		x.chunkID = append(x.chunkID, id)
		x.chunkDoc = append(x.chunkDoc, d)
		x.chunkLen = append(x.chunkLen, uint16(l))
		x.docLen[d] += uint32(len(chunkTerms) - body)
		x.docChunks[d]++
		x.docChunkLn[d] += uint64(l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	flushDoc()
	// Chunk and document numbers only grow, so each list is sorted.
	x.chunkPost.done()
	x.docPost.done()
	return x, nil
}

// appendTerms appends the numbers of text's terms to ids, adding new terms.
func (x *index) appendTerms(ids []uint32, text string) []uint32 {
	eachTerm(text, func(k cjkKey) {
		if r := k >> 32; k&0xffffffff == 0 && r < maxUni {
			n := x.uni[r]
			if n == 0 {
				n = x.newTerm() + 1
				x.uni[r] = n
			}
			ids = append(ids, n-1)
			return
		}
		n, ok := x.cjkTerms[k]
		if !ok {
			n = x.newTerm()
			x.cjkTerms[k] = n
		}
		ids = append(ids, n)
	}, func(w string) {
		n, ok := x.words[w]
		if !ok {
			n = x.newTerm()
			x.words[w] = n
		}
		ids = append(ids, n)
	})
	return ids
}

func (x *index) newTerm() uint32 {
	x.docPost.newTerm()
	return x.chunkPost.newTerm()
}

// lookup returns the number of query term t.
func (x *index) lookup(t string) (uint32, bool) {
	if k, ok := cjkKeyOf(t); ok {
		if r := k >> 32; k&0xffffffff == 0 && r < maxUni {
			n := x.uni[r]
			return n - 1, n != 0
		}
		n, found := x.cjkTerms[k]
		return n, found
	}
	n, found := x.words[t]
	return n, found
}

// postCounts appends to post, for each distinct term in ids, one posting
// for unit with the term's count. count is scratch space, all zero on entry
// and on return, grown as terms are added.
func postCounts(post *postings, ids []uint32, unit uint32, count *[]uint16) {
	if n := len(post.lists); len(*count) < n {
		*count = append(*count, make([]uint16, n-len(*count))...)
	}
	cnt := *count
	for _, id := range ids {
		if cnt[id] < 65535 {
			cnt[id]++
		}
	}
	for _, id := range ids {
		if c := cnt[id]; c > 0 {
			post.add(id, unit, int(c))
			cnt[id] = 0
		}
	}
}

// loadACL (re)reads every document's class and access list.
func (x *index) loadACL(ctx context.Context, q querier) error {
	rows, err := q.QueryContext(ctx, `SELECT id, class FROM documents`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var class int
		if err := rows.Scan(&id, &class); err != nil {
			rows.Close()
			return err
		}
		if d, ok := x.docNum[id]; ok {
			x.docClass[d] = Class(class)
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for i := range x.docACL {
		x.docACL[i] = nil
	}
	rows, err = q.QueryContext(ctx, `SELECT doc, principal FROM acl ORDER BY doc, principal`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var doc int64
		var p string
		if err := rows.Scan(&doc, &p); err != nil {
			return err
		}
		if d, ok := x.docNum[doc]; ok {
			x.docACL[d] = append(x.docACL[d], p)
		}
	}
	return rows.Err()
}

// readable returns, for each dense document number, whether the caller may
// read it: its class is at most the caller's clearance and one of the
// caller's principals is on its access list (an empty list admits nobody).
func (x *index) readable(c Caller, collection string) []bool {
	ps := c.principals()
	out := make([]bool, len(x.docID))
	for d := range out {
		if x.docClass[d] > c.Clearance || (collection != "" && x.docColl[d] != collection) {
			continue
		}
		for _, p := range x.docACL[d] {
			if _, found := slices.BinarySearch(ps, p); found {
				out[d] = true
				break
			}
		}
	}
	return out
}

// current returns an index no older than the database, rebuilding or
// reloading access as the generation counters say.
func (k *DB) current(ctx context.Context) (*index, error) {
	var gen, aclGen int64
	if err := k.db.QueryRowContext(ctx, `SELECT (SELECT value FROM meta WHERE key = 'generation'), (SELECT value FROM meta WHERE key = 'acl_generation')`).
		Scan(&gen, &aclGen); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	k.mu.RLock()
	x := k.idx
	k.mu.RUnlock()
	if x != nil && x.gen == gen && x.aclGen == aclGen {
		return x, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idx != nil && k.idx.gen == gen && k.idx.aclGen == aclGen {
		return k.idx, nil
	}
	if k.idx != nil && k.idx.gen == gen {
		// Only access changed: copy the index's access part and reload it,
		// leaving searches that hold the old index undisturbed.
		y := *k.idx
		y.docClass = slices.Clone(y.docClass)
		y.docACL = make([][]string, len(y.docACL))
		if err := y.loadACL(ctx, k.db); err != nil {
			return nil, fmt.Errorf("search: load access lists: %w", err)
		}
		y.aclGen = aclGen
		k.idx = &y
		return k.idx, nil
	}
	if k.idx != nil && k.background {
		// Content changed: go on with the old terms while a new index is
		// built, but with access as it is now. A chunk removed or replaced
		// since is dropped by the access check that loads each result.
		if k.idx.aclGen != aclGen {
			y := *k.idx
			y.docClass = slices.Clone(y.docClass)
			y.docACL = make([][]string, len(y.docACL))
			if err := y.loadACL(ctx, k.db); err != nil {
				return nil, fmt.Errorf("search: load access lists: %w", err)
			}
			y.aclGen = aclGen
			k.idx = &y
		}
		if !k.rebuilding && k.takeGate() {
			k.rebuilding = true
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				x, err := k.loadIndex(context.Background())
				k.mu.Lock()
				k.rebuilding = false
				if err == nil && x.gen >= k.idx.gen {
					k.idx = x
				}
				k.mu.Unlock()
				k.releaseGate()
				if err == nil && k.onIndex != nil {
					k.onIndex(x)
				}
			}()
		}
		return k.idx, nil
	}
	x, err := k.loadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("search: build index: %w", err)
	}
	k.idx = x
	return x, nil
}

// SetBackgroundRebuild makes searches after another process's write go on
// with the old index, access lists reloaded at once, while the new one is
// built (seconds at 100,000 chunks): for a long-running server. Off, the
// default, a search waits for the rebuild, so it always sees the latest
// documents.
func (k *DB) SetBackgroundRebuild(on bool) {
	k.mu.Lock()
	k.background = on
	k.mu.Unlock()
}

// takeGate reports whether k may start a background rebuild: always,
// unless k shares a gate (Shared's handles do, so that a burst of writes
// while questions arrive starts one rebuild at a time, not one per
// reopened handle).
func (k *DB) takeGate() bool {
	if k.rebuildGate == nil {
		return true
	}
	select {
	case k.rebuildGate <- struct{}{}:
		return true
	default:
		return false
	}
}

func (k *DB) releaseGate() {
	if k.rebuildGate != nil {
		<-k.rebuildGate
	}
}
