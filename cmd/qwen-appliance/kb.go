package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
)

// Installed locations: the knowledge base lives inside the encrypted model
// store, in a directory of its own (mode 0700).
var (
	defaultKBPath     = kb.StorePath(provision.StoreDir)
	defaultTokensPath = filepath.Join(provision.ConfigDir, "tokens.json")
	defaultAuditLog   = filepath.Join(provision.LogDir, "audit.log")
	defaultAuditKey   = filepath.Join(provision.ConfigDir, "audit.key")
)

func init() {
	dbFlag := &cli.StringFlag{Name: "db", Usage: "knowledge base file", Value: defaultKBPath}
	auditFlags := []cli.Flag{
		&cli.StringFlag{Name: "audit-log", Usage: "hash-chained audit log the kb.* events are appended to, also while the gateway writes it ('' = none)", Value: defaultAuditLog},
		&cli.StringFlag{Name: "audit-key", Usage: "private key that signs audit checkpoints (the default is used only when it exists)", Value: defaultAuditKey},
	}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "JSON output"}
	withDB := func(fs ...cli.Flag) []cli.Flag { return append(append([]cli.Flag{dbFlag}, auditFlags...), fs...) }
	register(&cli.Command{
		Name:  "kb",
		Usage: "the knowledge base: ingest documents, set who may read them, search as a role",
		Description: "Documents are cut into chunks and indexed for Chinese and English search. Each\n" +
			"document has a class (public, internal, secret) and an access list of principals\n" +
			"(role:NAME, user:TOKEN-ID, all); a caller finds only chunks of documents that list\n" +
			"one of its principals, at or below its clearance. A document without an access\n" +
			"list is invisible.",
		Subcommands: []*cli.Command{
			{
				Name:  "ingest",
				Usage: "store files (Markdown, text, HTML, DOCX, PDF) or directories of them",
				UsageText: "qwen-appliance kb ingest PATH... --allow role:hr,role:admin|all --class public|internal|secret [--collection C] [--title T]\n" +
					"   qwen-appliance kb ingest --bundle DIR --trust K.pub --allow ... --class ...",
				Description: "Each file is one transaction. A file that cannot be read (unknown type, binary,\n" +
					"corrupt, zip bomb, encrypted PDF, over --max-bytes) is reported on stderr and\n" +
					"skipped; the others go on, and the exit status is 1. Ingesting the same path\n" +
					"again replaces the document and raises its version (same content: only access and\n" +
					"class change). PDF text is read by PDFium in a WebAssembly sandbox (256 MiB, 2 min\n" +
					"per file; the first PDF of a run compiles it, a few seconds); see docs/kb-formats.md.\n\n" +
					"--bundle ingests the kb/ tree of a signed bundle that crossed the gap: its manifest\n" +
					"is verified against --trust first (exit 3 when it fails), and every file must hash\n" +
					"to its signed SHA-256 as it is read.",
				Flags: withDB(
					&cli.StringSliceFlag{Name: "allow", Usage: "principals that may read the documents (role:NAME, user:TOKEN-ID, all)", Required: true},
					&cli.StringFlag{Name: "class", Usage: "public, internal or secret", Required: true},
					&cli.StringFlag{Name: "collection", Usage: "collection the documents belong to"},
					&cli.StringFlag{Name: "title", Usage: "title (one file only; default: its first heading or name)"},
					&cli.Int64Flag{Name: "max-bytes", Usage: "largest file read", Value: kb.DefaultMaxFileBytes},
					&cli.StringFlag{Name: "bundle", Usage: "a signed bundle directory whose kb/ tree to ingest"},
					&cli.StringSliceFlag{Name: "trust", Usage: "public key(s) the bundle must be signed with"},
					&cli.IntFlag{Name: "threshold", Usage: "signatures by distinct trusted keys needed", Value: 1},
					&cli.BoolFlag{Name: "allow-expired", Usage: "accept an expired bundle manifest (logged)"},
					jsonFlag,
				),
				Action: kbIngest,
			},
			{
				Name:      "search",
				Usage:     "search as a caller: ranked chunks it may read",
				UsageText: "qwen-appliance kb search QUERY (--as role:R[,...] [--clearance C] | --as-token ID [--tokens F]) [-k N] [--json]",
				Flags: withDB(
					&cli.StringSliceFlag{Name: "as", Usage: "principals to search as (role:NAME, user:TOKEN-ID); 'all' is implied"},
					&cli.StringFlag{Name: "clearance", Usage: "clearance with --as", Value: "public"},
					&cli.StringFlag{Name: "as-token", Usage: "search as this gateway token ID (roles and clearance from --tokens, read now)"},
					&cli.StringFlag{Name: "tokens", Usage: "token file for --as-token", Value: defaultTokensPath},
					&cli.StringFlag{Name: "collection", Usage: "search this collection only"},
					&cli.IntFlag{Name: "k", Usage: "results wanted (at most 100)", Value: 5},
					&cli.StringFlag{Name: "dense", Usage: "also rank by dense vectors from this embedding endpoint (http://HOST/api/embed or /v1/embeddings; see 'kb embed'), fused by reciprocal rank fusion"},
					&cli.StringFlag{Name: "dense-model", Usage: "model for --dense (the one 'kb embed' used)"},
					jsonFlag,
				),
				Action: kbSearch,
			},
			kbAskCommand(dbFlag, auditFlags, jsonFlag),
			{
				Name:      "embed",
				Usage:     "compute dense vectors for the chunks that have none (optional)",
				UsageText: "qwen-appliance kb embed --url http://127.0.0.1:PORT/api/embed --model NAME",
				Description: "Sends every chunk without a vector for --model to the runtime's embedding\n" +
					"endpoint (Ollama /api/embed, or the OpenAI form /v1/embeddings of vLLM and\n" +
					"llama.cpp), 32 chunks per request, and stores the vectors. Run it again after\n" +
					"ingesting: it only embeds what is new. 'kb search --dense URL --dense-model NAME'\n" +
					"then fuses them with lexical ranking; access is applied before either ranks.",
				Flags: []cli.Flag{dbFlag,
					&cli.StringFlag{Name: "url", Required: true, Usage: "embedding endpoint"},
					&cli.StringFlag{Name: "model", Required: true, Usage: "embedding model name"},
					jsonFlag},
				Action: kbEmbed,
			},
			{
				Name:  "acl",
				Usage: "change who may read a document",
				Subcommands: []*cli.Command{{
					Name:        "set",
					Usage:       "replace a document's access list (and class), as metadata only",
					UsageText:   "qwen-appliance kb acl set DOC --allow role:hr,... [--class C]",
					Description: "No chunk is re-cut and the version stays; searches see the change at once.",
					Flags: withDB(
						&cli.StringSliceFlag{Name: "allow", Usage: "principals that may read the document", Required: true},
						&cli.StringFlag{Name: "class", Usage: "new class (default: unchanged)"},
						jsonFlag,
					),
					Action: kbACLSet,
				}},
			},
			{
				Name:        "list",
				Usage:       "list documents with their class, access list and version",
				Description: "Example:\n   qwen-appliance kb list --json",
				Flags:       []cli.Flag{dbFlag, jsonFlag, wideFlag},
				Action:      kbList,
			},
			{
				Name:      "show",
				Usage:     "describe one document",
				UsageText: "qwen-appliance kb show DOC",
				Flags:     []cli.Flag{dbFlag, jsonFlag},
				Action:    kbShow,
			},
			{
				Name:      "remove",
				Usage:     "remove a document, its chunks and its access list",
				UsageText: "qwen-appliance kb remove DOC",
				Flags:     withDB(jsonFlag),
				Action:    kbRemove,
			},
			{
				Name:  "check",
				Usage: "audit the knowledge base: access lists, file mode and owner, location, stored chunks",
				Description: "Finds documents without an access list, a database file or directory that\n" +
					"others may read or that the service user does not own, a database outside the\n" +
					"encrypted store, and chunks changed since ingest (hash recorded per document).\n" +
					"Exit status 3 when anything is found.\n\n" +
					"Example:\n   qwen-appliance kb check --uid 0",
				Flags: []cli.Flag{dbFlag,
					&cli.StringFlag{Name: "store", Usage: "the encrypted store the database must lie in ('' skips)", Value: provision.StoreDir},
					&cli.IntFlag{Name: "uid", Usage: "owner the database must have (-1 skips)", Value: -1},
					jsonFlag},
				Action: kbCheck,
			},
			{
				Name:      "eval",
				Usage:     "measure retrieval quality on a question set (CMRC 2018 form)",
				UsageText: "qwen-appliance kb eval --corpus FILE --queries FILE [--chunk-chars N] [--json]",
				Description: "Indexes the corpus ({id,title,text} per line) into a scratch knowledge base and\n" +
					"runs every question ({question,passage,answers} per line). Reports passage nDCG@10,\n" +
					"MRR@10, Recall@1/5, and answer recall@1/3/5: the share of questions with an answer\n" +
					"string in the top k chunks.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "corpus", Required: true, Usage: "passages, JSON lines"},
					&cli.StringFlag{Name: "queries", Required: true, Usage: "questions, JSON lines"},
					&cli.IntFlag{Name: "chunk-chars", Usage: "chunk size in characters", Value: 200},
					jsonFlag,
				},
				Action: kbEval,
			},
		},
	})
}

// openKB opens the knowledge base and, when --audit-log is set, the audit
// log its events go to. The returned func closes both.
func openKB(c *cli.Context, withAudit bool) (*kb.DB, func() error, error) {
	k, err := kb.Open(c.String("db"))
	if err != nil {
		return nil, nil, withCode(exitError, err, "check --db (default "+defaultKBPath+", inside the model store)")
	}
	closeAll := k.Close
	if p := c.String("audit-log"); withAudit && p != "" {
		o := audit.Options{Path: p}
		kp := c.String("audit-key")
		if _, err := os.Stat(kp); !c.IsSet("audit-key") && errors.Is(err, os.ErrNotExist) {
			kp = "" // not installed here: the log is chained, unsigned
		}
		if kp != "" {
			key, err := manifests.LoadPrivateKey(kp)
			if err != nil {
				k.Close()
				return nil, nil, withCode(exitError, err, "check --audit-key")
			}
			o.Key = &key
		}
		l, err := audit.Open(o)
		if err != nil {
			k.Close()
			return nil, nil, withCode(exitError, err, "check --audit-log (pass --audit-log '' to run without one)")
		}
		k.SetAuditor(l)
		closeAll = func() error { return errors.Join(l.Close(), k.Close()) }
	}
	return k, closeAll, nil
}

func kbIngest(c *cli.Context) (err error) {
	var expect map[string]string
	paths := c.Args().Slice()
	if dir := c.String("bundle"); dir != "" {
		if c.NArg() > 0 {
			return usagef("pass either --bundle DIR or paths", "--bundle and paths both given")
		}
		if paths, expect, err = signedKB(c, dir); err != nil {
			return err
		}
	} else if c.NArg() == 0 {
		return usagef("name files or directories: kb ingest PATH...", "nothing to ingest")
	}
	allow, err := kb.ParsePrincipals(c.StringSlice("allow")...)
	if err != nil {
		return usagef("pass --allow role:NAME,user:TOKEN-ID or all", "%v", err)
	}
	class, err := kb.ParseClass(c.String("class"))
	if err != nil {
		return usagef("pass --class public, internal or secret", "%v", err)
	}
	if c.String("title") != "" && (len(paths) > 1 || isDir(paths[0])) {
		return usagef("drop --title, or ingest one file at a time", "--title names one file, but several may be ingested")
	}
	k, closeKB, err := openKB(c, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	// Results are kept only for --json: a folder of any size costs the
	// same memory otherwise.
	var results []kb.FileResult
	seen, failed, unsigned := 0, 0, false
	err = k.IngestFiles(c.Context, paths, kb.IngestOptions{Allow: allow, Class: class,
		Collection: c.String("collection"), Title: c.String("title"), MaxBytes: c.Int64("max-bytes"), Expect: expect},
		func(r kb.FileResult) {
			seen++
			if c.Bool("json") {
				results = append(results, r)
			}
			if r.Err != nil {
				failed++
				unsigned = unsigned || errors.Is(r.Err, kb.ErrNotSigned)
				fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s: %v\n", r.Path, r.Err)
				return
			}
			if !c.Bool("json") {
				state := "stored"
				if r.Unchanged {
					state = "unchanged, access set"
				}
				fmt.Fprintf(c.App.Writer, "%s: doc %d version %d, %d chunks (%d flagged), %s\n", r.Path, r.DocID, r.Version, r.Chunks, r.Flagged, state)
			}
		})
	if errors.Is(err, context.Canceled) {
		return withCode(exitCancelled, err, "")
	}
	if err != nil {
		return withCode(exitError, err, "check the paths")
	}
	if c.Bool("json") {
		type row struct {
			kb.FileResult
			Error string `json:"error,omitempty"`
		}
		rows := []row{}
		for _, r := range results {
			x := row{FileResult: r}
			if r.Err != nil {
				x.Error = r.Err.Error()
			}
			rows = append(rows, x)
		}
		if err := printJSON(c.App.Writer, rows); err != nil {
			return err
		}
	}
	if failed > 0 {
		code := exitError
		if unsigned {
			code = exitVerification
		}
		return reportedError(code, fmt.Errorf("%d of %d files were not ingested", failed, seen), "see the errors above; the other files were stored")
	}
	return nil
}

// signedKB verifies the bundle at dir against --trust and returns the
// files of its kb/ tree, with the SHA-256 each must have.
func signedKB(c *cli.Context, dir string) ([]string, map[string]string, error) {
	v, err := verifierFromFlags(c)
	if err != nil {
		return nil, nil, err
	}
	signed, err := v.Open(dir)
	if err != nil {
		return nil, nil, openError(err)
	}
	var paths []string
	expect := map[string]string{}
	for _, f := range signed.Manifest.Files {
		if !strings.HasPrefix(f.Path, "kb/") {
			continue
		}
		p, err := filepath.Abs(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return nil, nil, err
		}
		paths = append(paths, p)
		expect[p] = f.SHA256
	}
	if len(paths) == 0 {
		return nil, nil, withCode(exitError, fmt.Errorf("bundle %s: its manifest lists no kb/ files", dir), "put the documents under kb/ in the bundle before signing it")
	}
	fmt.Fprintf(c.App.ErrWriter, "bundle %s: %s version %d, signed by %v; %d kb/ files\n", dir, signed.Manifest.Name, signed.Manifest.Version, signed.KeyIDs, len(paths))
	return paths, expect, nil
}

func kbSearch(c *cli.Context) (err error) {
	if c.NArg() != 1 {
		return usagef("quote the query: kb search 'QUERY' --as role:R", "want one query, got %d arguments", c.NArg())
	}
	caller, err := callerFromFlags(c)
	if err != nil {
		return err
	}
	if k := c.Int("k"); k < 1 || k > kb.MaxK {
		return usagef("pass -k between 1 and 100", "-k %d is out of range", k)
	}
	k, closeKB, err := openKB(c, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	q := kb.Query{Text: c.Args().First(), Caller: caller, K: c.Int("k"),
		Collection: c.String("collection"), TokenID: c.String("as-token")}
	switch url, model := c.String("dense"), c.String("dense-model"); {
	case url != "" && model == "":
		return usagef("pass --dense-model NAME (the model 'kb embed' used)", "--dense without --dense-model")
	case url == "" && model != "":
		return usagef("pass --dense URL", "--dense-model without --dense")
	case url != "":
		q.Dense = &kb.Embedder{URL: url, Model: model}
	}
	hits, err := k.Search(c.Context, q)
	if errors.Is(err, kb.ErrEmptyQuery) {
		return usagef("search for words or Chinese text", "%v", err)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if hits == nil {
			hits = []kb.Hit{}
		}
		return printJSON(c.App.Writer, map[string]any{"results": hits})
	}
	w := c.App.Writer
	if len(hits) == 0 {
		fmt.Fprintln(w, "no results")
	}
	for i, h := range hits {
		where := h.Title
		if h.Heading == h.Title || strings.HasPrefix(h.Heading, h.Title+" > ") {
			where = h.Heading // the title is the top heading
		} else if h.Heading != "" {
			where += " > " + h.Heading
		}
		if h.Page > 0 {
			where += fmt.Sprintf(" (p. %d)", h.Page)
		}
		flag := ""
		if h.Flagged {
			flag = " [reads like an instruction to a model]"
		}
		fmt.Fprintf(w, "%d. %.3f  doc %d v%d chunk %d  %s%s\n   %s\n", i+1, h.Score, h.Doc, h.Version, h.Chunk, where, flag, oneLine(h.Text))
	}
	return nil
}

// callerFromFlags reads who asks from --as and --clearance, or from
// --as-token and the token file.
func callerFromFlags(c *cli.Context) (kb.Caller, error) {
	switch as, tok := c.StringSlice("as"), c.String("as-token"); {
	case len(as) > 0 && tok != "":
		return kb.Caller{}, usagef("pass either --as or --as-token", "--as and --as-token both given")
	case tok != "":
		caller, err := kb.TokenCaller(c.String("tokens"), tok, time.Now())
		if errors.Is(err, kb.ErrToken) {
			return kb.Caller{}, withCode(exitError, err, "see 'qwen-appliance tokens list --file "+c.String("tokens")+"'")
		}
		if err != nil {
			return kb.Caller{}, withCode(exitError, err, "check --tokens")
		}
		return caller, nil
	case len(as) > 0:
		ps, err := kb.ParsePrincipals(as...)
		if err != nil {
			return kb.Caller{}, usagef("pass --as role:NAME or user:TOKEN-ID", "%v", err)
		}
		cl, err := kb.ParseClass(c.String("clearance"))
		if err != nil {
			return kb.Caller{}, usagef("pass --clearance public, internal or secret", "%v", err)
		}
		return kb.Caller{Principals: ps, Clearance: cl}, nil
	}
	return kb.Caller{}, usagef("pass --as role:NAME or --as-token ID", "no caller given")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func docArg(c *cli.Context, verb string) (int64, error) {
	if c.NArg() != 1 {
		return 0, usagef("name one document ID (see 'qwen-appliance kb list')", "kb %s wants one document ID, got %d arguments", verb, c.NArg())
	}
	id, err := strconv.ParseInt(c.Args().First(), 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("name a document by its numeric ID (see 'qwen-appliance kb list')", "%q is not a document ID", c.Args().First())
	}
	return id, nil
}

func noDocument(err error) error {
	if errors.Is(err, kb.ErrNoDocument) {
		return withCode(exitError, err, "see 'qwen-appliance kb list'")
	}
	return err
}

func kbACLSet(c *cli.Context) (err error) {
	id, err := docArg(c, "acl set")
	if err != nil {
		return err
	}
	allow, err := kb.ParsePrincipals(c.StringSlice("allow")...)
	if err != nil {
		return usagef("pass --allow role:NAME,user:TOKEN-ID or all", "%v", err)
	}
	var class *kb.Class
	if s := c.String("class"); s != "" {
		cl, err := kb.ParseClass(s)
		if err != nil {
			return usagef("pass --class public, internal or secret", "%v", err)
		}
		class = &cl
	}
	k, closeKB, err := openKB(c, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	if err := k.SetAccess(c.Context, id, allow, class); err != nil {
		return noDocument(err)
	}
	i, err := k.Show(c.Context, id)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, i)
	}
	fmt.Fprintf(c.App.Writer, "doc %d: class %s, allow %s\n", i.ID, i.Class, joinPrincipals(i.Allow))
	return nil
}

func joinPrincipals(ps []kb.Principal) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	if len(s) == 0 {
		return "(nobody)"
	}
	return strings.Join(s, ",")
}

func kbList(c *cli.Context) (err error) {
	k, closeKB, err := openKB(c, false)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	docs, err := k.List(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, docs)
	}
	var rows [][]string
	for _, d := range docs {
		rows = append(rows, []string{fmt.Sprint(d.ID), fmt.Sprint(d.Version), fmt.Sprint(d.Class), joinPrincipals(d.Allow), fmt.Sprint(d.Chunks), d.Collection, d.Title})
	}
	return writeTable(c, []string{"ID", "VERSION", "CLASS", "ALLOW", "CHUNKS", "COLLECTION", "TITLE"}, rows, 0)
}

func kbShow(c *cli.Context) (err error) {
	id, err := docArg(c, "show")
	if err != nil {
		return err
	}
	k, closeKB, err := openKB(c, false)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	d, err := k.Show(c.Context, id)
	if err != nil {
		return noDocument(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, d)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "doc %d: %s\n  source: %s\n  collection: %s\n  format: %s, %d bytes, sha256 %s\n  version: %d (ingested %s)\n  class: %s\n  allow: %s\n  chunks: %d (%d flagged as instructions)\n",
		d.ID, d.Title, d.Source, d.Collection, d.Format, d.Size, d.SHA256, d.Version, d.Ingested, d.Class, joinPrincipals(d.Allow), d.Chunks, d.Flagged)
	return nil
}

func kbRemove(c *cli.Context) (err error) {
	id, err := docArg(c, "remove")
	if err != nil {
		return err
	}
	k, closeKB, err := openKB(c, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	if err := k.Remove(c.Context, id); err != nil {
		return noDocument(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{"removed": id})
	}
	fmt.Fprintf(c.App.Writer, "removed doc %d\n", id)
	return nil
}

func kbEval(c *cli.Context) error {
	corpus, err := os.Open(c.String("corpus"))
	if err != nil {
		return withCode(exitError, err, "check --corpus")
	}
	defer corpus.Close()
	queries, err := os.Open(c.String("queries"))
	if err != nil {
		return withCode(exitError, err, "check --queries")
	}
	defer queries.Close()
	rep, err := kb.Eval(c.Context, corpus, queries, kb.EvalOptions{Chunking: kb.ChunkOptions{MaxChars: c.Int("chunk-chars")}})
	if err != nil {
		return withCode(exitError, err, "check --corpus and --queries (JSON lines, CMRC 2018 retrieval form)")
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, rep)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "%d passages, %d chunks, %d questions\n", rep.Passages, rep.Chunks, rep.Queries)
	fmt.Fprintf(w, "passage: nDCG@10 %.3f  MRR@10 %.3f  Recall@1 %.3f  Recall@5 %.3f\n", rep.NDCG10, rep.MRR10, rep.Recall1, rep.Recall5)
	fmt.Fprintf(w, "chunk answer recall: @1 %.3f  @3 %.3f  @5 %.3f\n", rep.AnswerRecall1, rep.AnswerRecall3, rep.AnswerRecall5)
	fmt.Fprintf(w, "ingest %.1fs, mean query %.2f ms\n", rep.IngestSeconds, rep.QueryMsMean)
	return nil
}

func kbCheck(c *cli.Context) (err error) {
	k, closeKB, err := openKB(c, false)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	probs, err := k.Check(c.Context, kb.CheckOptions{Store: c.String("store"), UID: c.Int("uid")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if probs == nil {
			probs = []kb.Problem{}
		}
		if err := printJSON(c.App.Writer, map[string]any{"ok": len(probs) == 0, "problems": probs}); err != nil {
			return err
		}
	} else {
		for _, p := range probs {
			fmt.Fprintf(c.App.Writer, "FAIL %s: %s\n", p.Check, p.Detail)
		}
		if len(probs) == 0 {
			fmt.Fprintln(c.App.Writer, "ok: every document has an access list, the file is private and in the store, stored chunks match their hashes")
		}
	}
	if len(probs) > 0 {
		return reportedError(exitVerification, fmt.Errorf("%d knowledge-base problems", len(probs)), "fix the access lists with 'kb acl set', the mode with chmod 0600, or re-ingest changed documents")
	}
	return nil
}
