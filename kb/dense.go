package kb

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// Dense vectors are optional: nothing is stored or computed until
// EmbedChunks runs, and Search uses them only when a Query names an
// Embedder. They live in a table of their own, created on first use, one
// row per chunk and model, removed with their chunk (re-ingest, remove) by
// the foreign key. Lexical ranking and the index are unchanged by them.
const embeddingsSchema = `
CREATE TABLE IF NOT EXISTS embeddings (
	chunk INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
	model TEXT    NOT NULL,
	vec   BLOB    NOT NULL, -- little-endian float32s, L2-normalised
	PRIMARY KEY (chunk, model)
) WITHOUT ROWID`

// embedBatch is how many chunks one request to the embedding server holds.
const embedBatch = 32

// rrfK is reciprocal rank fusion's constant: a result at rank r (from 1)
// in one list adds 1/(rrfK+r) to its fused score (Cormack et al., 2009).
const rrfK = 60

// denseDepth is how many results of each list are fused.
const denseDepth = 50

// EmbedChunks computes and stores the vectors of every chunk that has none
// for e.Model yet, embedBatch chunks per request, each batch in its own
// transaction (an interrupted run keeps what it finished and resumes).
// The text embedded is the chunk's heading path and its text. progress,
// when not nil, is called after each batch. It returns how many chunks it
// embedded.
func (k *DB) EmbedChunks(ctx context.Context, e *Embedder, progress func(done int)) (int, error) {
	if _, err := e.ollamaAPI(); err != nil {
		return 0, err
	}
	if _, err := k.db.ExecContext(ctx, embeddingsSchema); err != nil {
		return 0, fmt.Errorf("embed: %w", err)
	}
	done := 0
	for {
		rows, err := k.db.QueryContext(ctx, `SELECT c.id, c.heading, c.text FROM chunks c
			WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.chunk = c.id AND e.model = ?)
			ORDER BY c.id LIMIT ?`, e.Model, embedBatch)
		if err != nil {
			return done, fmt.Errorf("embed: %w", err)
		}
		var ids []int64
		var texts []string
		for rows.Next() {
			var id int64
			var heading, text string
			if err := rows.Scan(&id, &heading, &text); err != nil {
				rows.Close()
				return done, fmt.Errorf("embed: %w", err)
			}
			if heading != "" {
				text = heading + "\n" + text
			}
			ids, texts = append(ids, id), append(texts, text)
		}
		if err := rows.Close(); err != nil {
			return done, fmt.Errorf("embed: %w", err)
		}
		if len(ids) == 0 {
			return done, nil
		}
		vecs, err := e.Embed(ctx, texts)
		if err != nil {
			return done, fmt.Errorf("embed chunks %d-%d: %w", ids[0], ids[len(ids)-1], err)
		}
		tx, err := k.db.BeginTx(ctx, nil)
		if err != nil {
			return done, fmt.Errorf("embed: %w", err)
		}
		for i, id := range ids {
			// A chunk replaced since it was read is skipped, not an error.
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO embeddings (chunk, model, vec)
				SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?1)`, id, e.Model, encodeVec(vecs[i])); err != nil {
				tx.Rollback()
				return done, fmt.Errorf("embed: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return done, fmt.Errorf("embed: %w", err)
		}
		done += len(ids)
		if progress != nil {
			progress(done)
		}
	}
}

func encodeVec(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// denseSQL reads the vectors of the chunks the caller may read, and only
// those: access is part of the statement, so no unreadable chunk is ever
// scored.
const denseSQL = `
SELECT e.chunk, e.vec FROM embeddings e
JOIN chunks c ON c.id = e.chunk JOIN documents d ON d.id = c.doc
WHERE e.model = ?1 AND d.class <= ?2 AND (?3 = '' OR d.collection = ?3)
  AND EXISTS (SELECT 1 FROM acl a WHERE a.doc = c.doc AND a.principal IN (SELECT value FROM json_each(?4)))`

type scored struct {
	id    int64
	score float64
}

// denseSearch embeds the query and returns the n readable chunks nearest to
// it by cosine, best first. It scans every readable vector: fine for the
// thousands of chunks of a policy library, linear in them.
func (k *DB) denseSearch(ctx context.Context, q Query, n int) ([]scored, error) {
	vecs, err := q.Dense.Embed(ctx, []string{q.Text})
	if err != nil {
		return nil, fmt.Errorf("search: embed the query: %w", err)
	}
	qv := vecs[0]
	var exists int
	if err := k.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	if exists == 0 {
		return nil, fmt.Errorf("search: no dense vectors stored (run 'kb embed' with model %q first)", q.Dense.Model)
	}
	principals, _ := json.Marshal(q.Caller.principals())
	rows, err := k.db.QueryContext(ctx, denseSQL, q.Dense.Model, int(q.Caller.Clearance), q.Collection, string(principals))
	if err != nil {
		return nil, fmt.Errorf("search: dense: %w", err)
	}
	defer rows.Close()
	var out []scored
	for rows.Next() {
		var s scored
		var b []byte
		if err := rows.Scan(&s.id, &b); err != nil {
			return nil, fmt.Errorf("search: dense: %w", err)
		}
		if len(b) != 4*len(qv) {
			return nil, fmt.Errorf("search: stored vectors of model %q have %d dimensions, the query's %d (re-run 'kb embed' after changing the model)",
				q.Dense.Model, len(b)/4, len(qv))
		}
		for i, x := range qv {
			s.score += float64(x) * float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: dense: %w", err)
	}
	slices.SortFunc(out, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.id, b.id)
	})
	return out[:min(n, len(out))], nil
}

// fuse merges ranked lists by reciprocal rank fusion and returns the best
// k, each with its fused score.
func fuse(k int, lists ...[]scored) []scored {
	sum := map[int64]float64{}
	for _, l := range lists {
		for r, s := range l {
			sum[s.id] += 1 / float64(rrfK+r+1)
		}
	}
	out := make([]scored, 0, len(sum))
	for id, s := range sum {
		out = append(out, scored{id, s})
	}
	slices.SortFunc(out, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.id, b.id)
	})
	return out[:min(k, len(out))]
}
