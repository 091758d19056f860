package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// DefaultHubEndpoint is used when HF_ENDPOINT is not set.
const DefaultHubEndpoint = "https://huggingface.co"

// maxHubAnswer bounds the revision listing read from the hub.
const maxHubAnswer = 32 << 20

// Hub talks to the Hugging Face hub or a mirror of it.
type Hub struct {
	Endpoint string // DefaultHubEndpoint when empty
	Token    string // sent as a bearer token to Endpoint's host only
	Client   *Client
}

// HubFromEnv returns a hub configured by HF_ENDPOINT and HF_TOKEN.
func HubFromEnv(c *Client) *Hub {
	return &Hub{Endpoint: os.Getenv("HF_ENDPOINT"), Token: os.Getenv("HF_TOKEN"), Client: c}
}

// RepoFile is one file of a repository at a commit, as the hub lists it.
type RepoFile struct {
	Path   string
	Size   int64
	SHA256 string // of the LFS object; "" for files stored in git
	BlobID string // git blob SHA-1 of files stored in git
}

// Revision is a repository resolved to a commit.
type Revision struct {
	Repo   string
	Commit string
	Files  []RepoFile
}

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hexSHA1   = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

func (h *Hub) endpoint() string {
	if h.Endpoint == "" {
		return DefaultHubEndpoint
	}
	return strings.TrimSuffix(h.Endpoint, "/")
}

// header returns the request headers for the hub itself.
func (h *Hub) header() http.Header {
	hd := http.Header{}
	if h.Token != "" {
		hd.Set("Authorization", "Bearer "+h.Token)
	}
	return hd
}

type hubSibling struct {
	RFilename string `json:"rfilename"`
	BlobID    string `json:"blobId"`
	Size      *int64 `json:"size"`
	LFS       *struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"lfs"`
}

type hubRevision struct {
	SHA      string       `json:"sha"`
	Siblings []hubSibling `json:"siblings"`
}

// Resolve asks the hub which commit rev of repo is and lists its files
// with sizes, LFS SHA-256s and git blob IDs. Every name and digest the hub
// sends is checked before use.
func (h *Hub) Resolve(ctx context.Context, repo, rev string) (*Revision, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s?blobs=true", h.endpoint(), repo, url.PathEscape(rev))
	var body []byte
	var err error
	for attempt := 0; ; attempt++ {
		body, err = h.get(ctx, u)
		var p *permanentError
		if err == nil || errors.As(err, &p) || ctx.Err() != nil || attempt >= h.Client.retries() {
			break
		}
		h.Client.Progress.Note("resolve %s@%s: %v; retry %d of %d in %s", repo, rev, err, attempt+1, h.Client.retries(), h.Client.delay(attempt))
		if serr := h.Client.sleep(ctx, attempt); serr != nil {
			return nil, serr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s@%s: %w", repo, rev, unwrapPermanent(err))
	}
	var hr hubRevision
	if err := json.Unmarshal(body, &hr); err != nil {
		return nil, fmt.Errorf("resolve %s@%s: the hub's answer is not the expected JSON: %w", repo, rev, err)
	}
	if !hexSHA1.MatchString(hr.SHA) {
		return nil, fmt.Errorf("resolve %s@%s: the hub named commit %q, not 40 hex digits", repo, rev, hr.SHA)
	}
	r := &Revision{Repo: repo, Commit: hr.SHA}
	for i, s := range hr.Siblings {
		if err := manifests.ValidatePath(s.RFilename); err != nil {
			return nil, fmt.Errorf("resolve %s@%s: file %d %q: %v", repo, rev, i, s.RFilename, err)
		}
		f := RepoFile{Path: s.RFilename, Size: -1}
		if s.Size != nil {
			f.Size = *s.Size
		}
		if s.LFS != nil {
			if !hexSHA256.MatchString(s.LFS.SHA256) {
				return nil, fmt.Errorf("resolve %s@%s: %s: LFS sha256 %q is not 64 hex digits", repo, rev, s.RFilename, s.LFS.SHA256)
			}
			f.SHA256, f.Size = s.LFS.SHA256, s.LFS.Size
		} else if s.BlobID != "" {
			if !hexSHA1.MatchString(s.BlobID) {
				return nil, fmt.Errorf("resolve %s@%s: %s: blob id %q is not 40 hex digits", repo, rev, s.RFilename, s.BlobID)
			}
			f.BlobID = s.BlobID
		}
		if f.Size < -1 {
			return nil, fmt.Errorf("resolve %s@%s: %s: negative size", repo, rev, s.RFilename)
		}
		r.Files = append(r.Files, f)
	}
	return r, nil
}

func (h *Hub) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &permanentError{err}
	}
	req.Header = h.header()
	req.Header.Set("Accept", "application/json")
	resp, err := h.Client.httpClient().Do(req)
	if err != nil {
		return nil, unreachable(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("hub answered %s", resp.Status)
	default:
		return nil, &permanentError{&StatusError{URL: u, Status: resp.StatusCode}}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHubAnswer+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxHubAnswer {
		return nil, &permanentError{fmt.Errorf("hub answer larger than %d bytes", maxHubAnswer)}
	}
	return body, nil
}

// Want returns the download of f at the resolved commit, pinned by what the
// hub advertised (and by pin, when the spec pins the file too).
func (h *Hub) Want(r *Revision, f RepoFile, name, pin string) Want {
	w := Want{
		Name:    name,
		URL:     fmt.Sprintf("%s/%s/resolve/%s/%s", h.endpoint(), r.Repo, r.Commit, escapePath(f.Path)),
		Header:  h.header(),
		Size:    f.Size,
		SHA256:  f.SHA256,
		GitBlob: f.BlobID,
	}
	if pin != "" {
		w.SHA256 = pin
	}
	return w
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

func unwrapPermanent(err error) error {
	var p *permanentError
	if errors.As(err, &p) {
		return p.err
	}
	return err
}
