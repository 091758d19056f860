package kb

import (
	"fmt"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// extractHTML keeps the text a reader sees: it drops scripts, styles,
// templates and everything hidden (the hidden attribute, aria-hidden,
// display:none, visibility:hidden, zero font size or opacity, and text
// whose colour is white or equals its background), and follows h1-h6
// into heading paths.
func extractHTML(s string) (*Extracted, error) {
	doc, err := html.Parse(strings.NewReader(s))
	if err != nil {
		return nil, fmt.Errorf("%w: HTML: %v", ErrCorrupt, err)
	}
	e := &Extracted{}
	var path []string
	var body strings.Builder
	flush := func() {
		if t := strings.TrimSpace(body.String()); t != "" {
			e.Sections = append(e.Sections, Section{Heading: append([]string(nil), path...), Text: t})
		}
		body.Reset()
	}
	var walk func(n *html.Node, depth int)
	walk = func(n *html.Node, depth int) {
		if depth > 512 {
			return // deeper nesting is not a document anyone reads
		}
		switch n.Type {
		case html.TextNode:
			body.WriteString(n.Data)
			return
		case html.ElementNode:
			switch n.DataAtom {
			case atom.Script, atom.Style, atom.Noscript, atom.Template, atom.Iframe, atom.Object, atom.Svg, atom.Head:
				if n.DataAtom == atom.Head {
					if t := findTitle(n); t != "" && e.Title == "" {
						e.Title = t
					}
				}
				return
			}
			if hiddenElement(n) {
				return
			}
			if level := headingLevel(n.DataAtom); level > 0 {
				flush()
				title := strings.Join(strings.Fields(visibleText(n)), " ")
				if title == "" {
					return
				}
				if level > len(path)+1 {
					level = len(path) + 1
				}
				path = append(path[:level-1], title)
				if e.Title == "" && level == 1 {
					e.Title = title
				}
				return
			}
		}
		block := n.Type == html.ElementNode && isBlock(n.DataAtom)
		if block {
			body.WriteByte('\n')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, depth+1)
		}
		if block {
			body.WriteByte('\n')
		}
	}
	walk(doc, 0)
	flush()
	return e, nil
}

func findTitle(n *html.Node) string {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode && c.DataAtom == atom.Title {
			return strings.TrimSpace(visibleText(c))
		}
	}
	return ""
}

// visibleText is the text under n, without hidden elements.
func visibleText(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node, int)
	walk = func(n *html.Node, depth int) {
		if depth > 512 {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			return
		}
		if n.Type == html.ElementNode && (hiddenElement(n) || n.DataAtom == atom.Script || n.DataAtom == atom.Style) {
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return b.String()
}

func headingLevel(a atom.Atom) int {
	switch a {
	case atom.H1:
		return 1
	case atom.H2:
		return 2
	case atom.H3:
		return 3
	case atom.H4:
		return 4
	case atom.H5:
		return 5
	case atom.H6:
		return 6
	}
	return 0
}

func isBlock(a atom.Atom) bool {
	switch a {
	case atom.P, atom.Div, atom.Br, atom.Li, atom.Tr, atom.Td, atom.Th, atom.Table, atom.Ul, atom.Ol,
		atom.Section, atom.Article, atom.Header, atom.Footer, atom.Blockquote, atom.Pre, atom.Hr, atom.Dd, atom.Dt:
		return true
	}
	return false
}

// hiddenElement reports whether n is hidden by its attributes or its
// inline style.
func hiddenElement(n *html.Node) bool {
	var style string
	for _, a := range n.Attr {
		switch strings.ToLower(a.Key) {
		case "hidden":
			return true
		case "aria-hidden":
			if strings.EqualFold(strings.TrimSpace(a.Val), "true") {
				return true
			}
		case "style":
			style = a.Val
		case "type":
			if n.DataAtom == atom.Input && strings.EqualFold(a.Val, "hidden") {
				return true
			}
		case "color":
			// <font color="#ffffff">, the way older editors write white text
			if n.DataAtom == atom.Font && normColor(strings.ToLower(strings.TrimSpace(a.Val))) == "#ffffff" {
				return true
			}
		}
	}
	if style == "" {
		return false
	}
	props := map[string]string{}
	for _, decl := range strings.Split(style, ";") {
		k, v, ok := strings.Cut(decl, ":")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "!important")))
		props[strings.ToLower(strings.TrimSpace(k))] = strings.Join(strings.Fields(v), "")
	}
	switch {
	case props["display"] == "none",
		props["visibility"] == "hidden" || props["visibility"] == "collapse",
		props["opacity"] == "0" || props["opacity"] == "0.0",
		isZero(props["font-size"]),
		props["content-visibility"] == "hidden":
		return true
	}
	if c, ok := props["color"]; ok {
		bg, hasBG := props["background-color"]
		if !hasBG {
			bg, hasBG = props["background"]
		}
		if hasBG && normColor(c) == normColor(bg) {
			return true
		}
		if !hasBG && normColor(c) == "#ffffff" {
			return true // white text on the default white page
		}
		if normColor(c) == "transparent" {
			return true
		}
	}
	return false
}

func isZero(v string) bool {
	switch v {
	case "0", "0px", "0pt", "0em", "0rem", "0%":
		return true
	}
	return false
}

// normColor maps the usual spellings of a colour to one form.
func normColor(c string) string {
	switch c {
	case "white", "#fff", "#ffffff", "#fffffe", "rgb(255,255,255)", "rgba(255,255,255,1)":
		return "#ffffff"
	case "black", "#000", "#000000", "rgb(0,0,0)":
		return "#000000"
	case "rgba(0,0,0,0)":
		return "transparent"
	}
	if len(c) == 4 && c[0] == '#' {
		return "#" + string([]byte{c[1], c[1], c[2], c[2], c[3], c[3]})
	}
	return c
}
