package kb

import (
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// instruction is one phrasing that addresses a language model rather than
// a human reader. Every match of re contains a word of each group in needs
// (in ASCII lower case), so a text lacking one is not tried: most text
// lacks them, and the patterns' backtracking is what ingest spent most of
// its time on.
type instruction struct {
	re    *regexp.Regexp
	needs [][]string
}

// instructions are the common prompt-injection phrasings in English and
// Chinese. A match only flags a chunk (part 2 quotes flagged chunks as data
// with a warning); it never hides it or changes what is retrieved.
var instructions = []instruction{
	{regexp.MustCompile(`(?i)\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|any|your|the)\b.{0,20}\b(instructions?|prompts?|rules|directions|guidelines|context)\b`),
		[][]string{{"ignore", "disregard", "forget", "override"}, {"instruction", "prompt", "rules", "directions", "guidelines", "context"}}},
	{regexp.MustCompile(`(?i)\b(system|developer)\s+(prompt|message|instructions?)\b`),
		[][]string{{"system", "developer"}, {"prompt", "message", "instruction"}}},
	{regexp.MustCompile(`(?i)\byou\s+are\s+now\b|\bact\s+as\s+(an?\s+)?(ai|assistant|model|admin|administrator|dan)\b|\bpretend\s+(to\s+be|you\s+are)\b`),
		[][]string{{"you", "act", "pretend"}}},
	{regexp.MustCompile(`(?i)\b(do\s+not|don't|never)\s+(tell|inform|reveal\s+to|mention\s+to)\s+the\s+user\b`),
		[][]string{{"user"}, {"tell", "inform", "reveal", "mention"}}},
	{regexp.MustCompile(`(?i)\b(print|reveal|output|list|dump|show|repeat)\b.{0,20}\b(every|all|other|hidden|secret|confidential)\b.{0,20}\b(documents?|files?|chunks?|context|prompts?|passwords?|secrets?)\b`),
		[][]string{{"print", "reveal", "output", "list", "dump", "show", "repeat"}, {"every", "all", "other", "hidden", "secret", "confidential"},
			{"document", "file", "chunk", "context", "prompt", "password", "secret"}}},
	{regexp.MustCompile(`(?i)\b(as\s+an?\s+(ai|llm|language\s+model))\b|\bassistant\s*:|\bjailbreak\b`),
		[][]string{{"as", "jailbreak"}}},
	{regexp.MustCompile(`(忽略|无视|忽视|不要理会|忘记|忘掉)(掉)?(你)?(之前|以上|上面|前面|上述|先前|此前|所有|全部|一切)?的?(所有|全部)?(指令|指示|命令|规则|要求|提示|设定|说明)`),
		[][]string{{"忽略", "无视", "忽视", "不要理会", "忘记", "忘掉"}, {"指令", "指示", "命令", "规则", "要求", "提示", "设定", "说明"}}},
	{regexp.MustCompile(`(系统提示|系统指令|系统消息|提示词)`),
		[][]string{{"系统提示", "系统指令", "系统消息", "提示词"}}},
	{regexp.MustCompile(`(你现在是|你现在扮演|请扮演|假装你是|从现在起你是|从现在开始你是)`),
		[][]string{{"你现在", "请扮演", "假装你是", "从现在"}}},
	{regexp.MustCompile(`(不要|别|切勿)(告诉|透露给|告知)用户`),
		[][]string{{"用户"}, {"告诉", "透露给", "告知"}}},
	{regexp.MustCompile(`(输出|打印|列出|显示|泄露|透露)(所有|全部|其他|隐藏的?|机密的?|秘密的?)的?(文档|文件|内容|资料|密码|上下文)`),
		[][]string{{"输出", "打印", "列出", "显示", "泄露", "透露"}, {"所有", "全部", "其他", "隐藏", "机密", "秘密"}, {"文档", "文件", "内容", "资料", "密码", "上下文"}}},
}

// A trigger is a word of the instructions' needs; mask has one bit for
// each (instruction, group) it belongs to. byFirst indexes them by first
// character, so that Flag finds every trigger in one pass over the text.
type trigger struct {
	word string
	mask uint64
}

var (
	byFirstASCII [128][]trigger
	byFirst      = map[rune][]trigger{}
	needMask     []uint64 // per instruction: the bits of all its groups
)

func init() {
	bit := 0
	needMask = make([]uint64, len(instructions))
	for i, in := range instructions {
		for _, g := range in.needs {
			if bit == 64 {
				panic("kb: more than 64 trigger groups")
			}
			for _, w := range g {
				r, _ := utf8.DecodeRuneInString(w)
				list := &byFirstASCII[r&127]
				if r >= utf8.RuneSelf {
					l := byFirst[r]
					list = &l
				}
				if j := slices.IndexFunc(*list, func(t trigger) bool { return t.word == w }); j >= 0 {
					(*list)[j].mask |= 1 << bit
				} else {
					*list = append(*list, trigger{w, 1 << bit})
				}
				if r >= utf8.RuneSelf {
					byFirst[r] = *list
				}
			}
			needMask[i] |= 1 << bit
			bit++
		}
	}
}

// Flag reports whether text reads like an instruction to a model. The test
// is deliberately simple and errs towards flagging: a flagged chunk is still
// searchable and readable.
func Flag(text string) bool {
	folded := foldASCII(text)
	var seen uint64
	for i, r := range folded {
		var list []trigger
		if r < utf8.RuneSelf {
			list = byFirstASCII[r]
		} else {
			list = byFirst[r]
		}
		for _, t := range list {
			if strings.HasPrefix(folded[i:], t.word) {
				seen |= t.mask
			}
		}
	}
	var t string // text with its white space collapsed, made once, when needed
	for i, in := range instructions {
		if seen&needMask[i] != needMask[i] {
			continue
		}
		if t == "" {
			t = strings.Join(strings.Fields(text), " ")
		}
		if in.re.MatchString(t) {
			return true
		}
	}
	return false
}

// foldASCII maps every character that (?i) matches to an ASCII letter onto
// that letter in lower case: A–Z, and the Kelvin sign and long s, which
// Unicode case folding joins to k and s. Anything else is left alone, and
// text with none of them is returned as is.
func foldASCII(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' || c == 0xE2 || c == 0xC5 { // K is E2 84 AA, ſ is C5 BF
			need = true
			break
		}
	}
	if !need {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch {
		case 'A' <= r && r <= 'Z':
			return r + 'a' - 'A'
		case r == '\u212A':
			return 'k'
		case r == '\u017F':
			return 's'
		}
		return r
	}, s)
}
