package kb

import (
	"regexp"
	"slices"
	"strings"
)

// instructionPatterns match text that addresses a language model rather
// than a human reader: the common prompt-injection phrasings in English and
// Chinese. A match only flags a chunk (part 2 quotes flagged chunks as data
// with a warning); it never hides it or changes what is retrieved.
var instructionPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\b(ignore|disregard|forget|override)\b.{0,30}\b(previous|prior|above|earlier|all|any|your|the)\b.{0,20}\b(instructions?|prompts?|rules|directions|guidelines|context)\b`),
	regexp.MustCompile(`(?i)\b(system|developer)\s+(prompt|message|instructions?)\b`),
	regexp.MustCompile(`(?i)\byou\s+are\s+now\b|\bact\s+as\s+(an?\s+)?(ai|assistant|model|admin|administrator|dan)\b|\bpretend\s+(to\s+be|you\s+are)\b`),
	regexp.MustCompile(`(?i)\b(do\s+not|don't|never)\s+(tell|inform|reveal\s+to|mention\s+to)\s+the\s+user\b`),
	regexp.MustCompile(`(?i)\b(print|reveal|output|list|dump|show|repeat)\b.{0,20}\b(every|all|other|hidden|secret|confidential)\b.{0,20}\b(documents?|files?|chunks?|context|prompts?|passwords?|secrets?)\b`),
	regexp.MustCompile(`(?i)\b(as\s+an?\s+(ai|llm|language\s+model))\b|\bassistant\s*:|\bjailbreak\b`),
	regexp.MustCompile(`(忽略|无视|忽视|不要理会|忘记|忘掉)(掉)?(你)?(之前|以上|上面|前面|上述|先前|此前|所有|全部|一切)?的?(所有|全部)?(指令|指示|命令|规则|要求|提示|设定|说明)`),
	regexp.MustCompile(`(系统提示|系统指令|系统消息|提示词)`),
	regexp.MustCompile(`(你现在是|你现在扮演|请扮演|假装你是|从现在起你是|从现在开始你是)`),
	regexp.MustCompile(`(不要|别|切勿)(告诉|透露给|告知)用户`),
	regexp.MustCompile(`(输出|打印|列出|显示|泄露|透露)(所有|全部|其他|隐藏的?|机密的?|秘密的?)的?(文档|文件|内容|资料|密码|上下文)`),
}

// triggers are words at least one of which every pattern above needs; a
// text with none of them is not flagged, and most text has none, so the
// patterns rarely run. (The English output pattern needs one of its
// quantifiers; the Chinese one, one of its objects.)
var triggers = []string{"ignore", "disregard", "forget", "override", "system", "developer", "you are now", "act as",
	"pretend", "the user", "every", "all", "other", "hidden", "secret", "confidential", "as a", "as an",
	"assistant", "jailbreak",
	"忽略", "无视", "忽视", "不要理会", "忘记", "忘掉", "系统提示", "系统指令", "系统消息", "提示词", "你现在", "请扮演",
	"假装你是", "从现在", "用户", "文档", "文件", "内容", "资料", "密码", "上下文"}

// Flag reports whether text reads like an instruction to a model. The test
// is deliberately simple and errs towards flagging: a flagged chunk is still
// searchable and readable.
func Flag(text string) bool {
	lower := text
	if hasUpperASCII(text) {
		lower = strings.ToLower(text)
	}
	if !slices.ContainsFunc(triggers, func(w string) bool { return strings.Contains(lower, w) }) {
		return false // the common case, without running a regular expression
	}
	t := strings.Join(strings.Fields(text), " ")
	for _, re := range instructionPatterns {
		if re.MatchString(t) {
			return true
		}
	}
	return false
}

func hasUpperASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
