"""Word lists and sentence frames for the scorer's synthetic training text (written for reer-assets).

Every list here was written for this module; none of it comes from the bundled corpus or the
benchmark references. Frames are short, with slots, so that the words around a slot change from
one document to the next: the scorer learns to reuse what an outline names, not any fixed text.
Slots: {p} a person, {l} a place, {o} an object phrase, {g} a group or organisation, {n} a number
phrase, {t} a time phrase, {a} an adjective, {v} a verb in the past tense, {w} a plain noun.
"""

from __future__ import annotations

# -- English ---------------------------------------------------------------------------------------

EN_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p",
             "pl", "qu", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "y", "z", "", "", "")
EN_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y", "au", "oa")
EN_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "x", "t", "ck", "sh", "ll", "ng", "rt")
EN_PLACE_TAILS = ("ford", "vale", "port", "wick", "moor", "ton", "bury", "field", "gate", "mere", "holm",
                  "stead", "crest", "haven", "brook", " Crossing", " Flats", " Hollow", " Quay", " Reach")
EN_GROUP_TAILS = ("Cooperative", "Works", "Guild", "Society", "Supply", "Collective", "Trust", "Depot",
                  "Laboratory", "Institute", "Studio", "Outfitters", "Foundation", "Union", "Exchange")

EN_ADJECTIVES = (
    "amber", "brittle", "copper", "dusty", "early", "faded", "gentle", "hollow", "icy", "jagged", "knotted",
    "late", "mossy", "narrow", "oval", "pale", "quiet", "rusty", "silver", "tidy", "uneven", "velvet", "woven",
    "yellow", "zinc", "bent", "cracked", "damp", "folded", "glossy", "heavy", "indigo", "loose", "muddy",
    "neat", "plain", "round", "sharp", "smoky", "square", "sturdy", "tall", "thin", "warm", "wide", "wooden",
    "bright", "crooked", "dim", "empty", "fragile", "green", "hidden", "little", "modest", "odd", "patient",
    "rapid", "rough", "salty", "shallow", "slow", "soft", "spare", "steep", "stubborn", "sudden", "swift",
    "tired", "tiny", "vivid", "wild", "careful", "clumsy", "cheap", "costly", "fresh", "frozen", "lonely",
    "noisy", "polished", "portable", "second", "spotted", "striped", "sunken", "tinted", "broken", "secret",
)
EN_NOUNS = (
    "anchor", "basket", "beacon", "bell", "bench", "blanket", "boiler", "bottle", "bridge", "bucket", "cabin",
    "cable", "canal", "candle", "canvas", "cart", "cellar", "chimney", "clock", "compass", "crate", "cupboard",
    "drawer", "drum", "engine", "fence", "ferry", "flag", "furnace", "garden", "gate", "glove", "hammer",
    "harbor", "helmet", "hinge", "jar", "kettle", "ladder", "lantern", "ledger", "lever", "map", "meadow",
    "mill", "mirror", "needle", "orchard", "oven", "paddle", "pipe", "pocket", "pond", "pump", "quilt", "rail",
    "ribbon", "river", "roof", "rope", "sail", "scale", "scarf", "shed", "shelf", "shovel", "signal", "sled",
    "spoon", "spring", "stair", "stove", "string", "switch", "tablet", "tent", "thread", "ticket", "tower",
    "tray", "trunk", "tunnel", "valve", "wagon", "wall", "well", "wheel", "whistle", "window", "wire", "yard",
    "album", "atlas", "badge", "barrel", "battery", "blade", "board", "brush", "button", "camera", "chart",
    "coin", "collar", "cushion", "dial", "envelope", "fan", "feather", "filter", "folder", "frame", "gauge",
    "hook", "jacket", "key", "kite", "knot", "label", "lamp", "lens", "magnet", "marble", "motor", "notebook",
    "pebble", "pencil", "pillow", "plank", "plate", "poster", "puzzle", "radio", "receipt", "saddle", "screen",
    "sensor", "shell", "spindle", "sponge", "stamp", "sticker", "tile", "timer", "token", "tripod", "umbrella",
    "vessel", "wallet", "whisk", "badger", "beetle", "crow", "falcon", "ferret", "heron", "otter", "owl",
    "pony", "rabbit", "sparrow", "turtle", "walrus", "weasel", "wren", "goat", "moth", "newt", "toad",
)
EN_PLAIN_NOUNS = (
    "plan", "reason", "habit", "promise", "question", "method", "budget", "schedule", "rule", "choice", "detail",
    "mistake", "lesson", "pattern", "problem", "result", "signal", "story", "trip", "visit", "warning", "wish",
    "agreement", "argument", "balance", "comfort", "courage", "delay", "effort", "error", "favor", "memory",
    "noise", "order", "patience", "plot", "pressure", "quarrel", "rhythm", "routine", "season", "silence",
    "surprise", "temper", "theory", "trade", "value", "weather", "harvest", "journey", "market", "meeting",
)
EN_VERBS = (
    "carried", "painted", "mended", "counted", "folded", "buried", "lifted", "sorted", "traded", "polished",
    "measured", "wrapped", "opened", "closed", "found", "lost", "borrowed", "returned", "repaired", "tested",
    "weighed", "cleaned", "packed", "unpacked", "labeled", "stacked", "shared", "hid", "noticed", "checked",
    "replaced", "moved", "pushed", "pulled", "watched", "sketched", "copied", "signed", "stored", "shipped",
    "rebuilt", "sanded", "tightened", "loosened", "welded", "stitched", "planted", "watered", "sold", "bought",
)
EN_GROUPS_PLAIN = ("crew", "committee", "family", "team", "club", "class", "choir", "council", "staff", "band",
                   "neighbors", "volunteers", "apprentices", "students", "drivers", "tenants", "riders")
EN_UNITS = ("crates", "kilometres", "litres", "grams", "metres", "minutes", "hours", "days", "weeks", "coins",
            "pages", "boxes", "bags", "steps", "seats", "rooms", "trays", "jars", "bottles", "tickets", "degrees",
            "percent", "dollars", "euros", "volts", "millimetres", "kilograms", "rows", "panels", "laps")
EN_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                   "fifteen", "twenty", "thirty", "forty", "fifty", "a hundred", "a dozen", "several")
EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December")
EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EN_TIME_FRAMES = ("on {day}", "every {day}", "in {month}", "by {month} {d}", "at {h}:{m2}", "before {h} o'clock",
                  "in {year}", "since {year}", "after {num} {unit}", "on {month} {d}, {year}", "last {day}")

EN_GENRES = ("short story", "product description", "field report", "letter", "lesson introduction",
             "speech", "memo", "travel note", "review", "essay", "notice", "fable", "guide", "press note",
             "recipe card", "diary entry", "announcement", "profile", "case summary", "brochure text")
EN_AUDIENCES = ("new members", "visitors", "children", "a town council", "customers", "colleagues", "parents",
                "first-time buyers", "club readers", "a local paper", "the night staff", "beginners",
                "long-time clients", "a school assembly", "the maintenance team", "hobbyists")
EN_QUERY_FRAMES = (
    "Write a {genre} about {topic} for {audience}. Keep it to about {words} words.",
    "Please draft a {genre} on {topic}, aimed at {audience}, roughly {words} words long.",
    "I need a {genre} for {audience} about {topic}; around {words} words, plain and concrete.",
    "Compose a {words}-word {genre} for {audience}. The subject is {topic}.",
    "Could you write {audience} a {genre} about {topic}? Aim for {words} words and name the details.",
    "A {genre} of {words} words or so, for {audience}, telling them about {topic}.",
)

EN_SENTENCES = (
    "{p} {v} the {o} near {l}.",
    "Nobody in {l} expected {p} to keep the {o}.",
    "The {o} weighed {n}, which surprised {p}.",
    "{t}, {p} {v} {n} for the {g}.",
    "At {l} the {g} {v} a {a} {w} together.",
    "{p} said the {o} was worth {n}.",
    "The {g} met {t} to settle the {w}.",
    "Every {w} at {l} started with {p}.",
    "{p} and {q} {v} the {o} {t}.",
    "It took {n} before the {o} worked again.",
    "The {a} {w} of {p} never changed.",
    "{q} wrote down {n} in the {o}.",
    "Behind the {o}, {p} found {n}.",
    "{t} the road to {l} closed for {n}.",
    "The {g} asked {p} about the {a} {w}.",
    "{p} kept {n} in a {a} {o}.",
    "When {q} reached {l}, the {o} was gone.",
    "The price of the {o} rose to {n}.",
    "{p} {v} it twice, then {v} it again.",
    "A {a} {o} sat by the door of {l}.",
    "The {g} from {l} brought {n}.",
    "{q} could not explain the {a} {w}.",
    "Our {g} {v} {n} {t}.",
    "Ask {p} where the {o} is kept.",
    "{p} was sure that {l} had {n}.",
    "Then the {o} {v}, and {q} laughed.",
    "Near {l} there is a {a} {o} that {p} {v}.",
    "Half of the {n} went to the {g}.",
    "The {w} is simple: {p} brings the {o}.",
    "{t}, the {g} will test the {o}.",
    "We {v} the {o} at {l} {t}.",
    "Each {o} holds {n}.",
    "The {a} {o} belongs to {q} now.",
    "First the {o}, then the {a} {w}.",
    "You can reach {l} in {n}.",
    "{p} calls it the {a} {w}.",
    "Inside the {o} were {n}.",
    "The {g} keeps a {a} {o} for {w}.",
    "{q} {v} the {a} {w} and left for {l}.",
    "The {o} at {l} has lasted {n}.",
)
EN_PARAGRAPH_OPENERS = ("", "", "", "", "Still, ", "Later, ", "Meanwhile, ", "In the end, ", "So ", "But ",
                        "Even so, ", "By then, ", "For now, ", "Oddly, ", "Luckily, ", "Of course, ")

# planning talk around the outline's items (never the wording of the control's outline)
EN_PLAN_OPEN = (
    "The request wants a {genre} for {audience}.",
    "So this is a {genre}, and the readers are {audience}.",
    "Let me think about what {audience} need from a {genre} like this.",
    "I am writing a {genre}; {audience} will read it.",
    "A {genre} for {audience}, then.",
)
EN_PLAN_ITEM = (
    "I will mention {x}.",
    "{x} has to appear.",
    "Hmm, maybe {x} comes early.",
    "Wait, I should not forget {x}.",
    "Then {x}.",
    "The part with {x} goes in the middle.",
    "Let me keep {x} exact.",
    "Alternatively, open with {x}.",
    "I need {x} somewhere near the end.",
    "Do not drop {x}.",
    "{x} matters to the reader.",
    "Then I turn to {x}.",
    "Maybe I close on {x}.",
    "I like the detail {x}.",
    "Also {x}.",
)
EN_PLAN_FILLER = (
    "The tone should stay plain.",
    "Short paragraphs will help.",
    "Hmm, the order still feels loose.",
    "Let me check the length as I go.",
    "I want the reader to see it, not be told.",
    "Wait, the opening needs a concrete picture.",
    "Alternatively, I could start in the middle.",
    "Nothing fancy; clear sentences.",
)
EN_DRAFT_MARK = "---"

# -- Chinese ---------------------------------------------------------------------------------------

ZH_SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
               "何", "郭", "马", "罗", "梁", "宋", "郑", "谢", "韩", "唐", "冯", "于", "董", "萧", "程", "曹",
               "袁", "邓", "许", "傅", "沈", "曾", "彭", "吕", "苏", "卢", "蒋", "蔡", "贾", "丁", "魏", "薛")
ZH_GIVEN = ("明", "华", "强", "芳", "敏", "静", "丽", "军", "磊", "洋", "勇", "艳", "杰", "娟", "涛", "超",
            "秀", "霞", "平", "刚", "桂", "英", "兰", "文", "斌", "宇", "浩", "凯", "鹏", "晨", "雪", "琳",
            "岚", "松", "柏", "帆", "舟", "晓", "蕾", "瑶", "航", "骁", "川", "野", "禾", "苗", "溪", "泉",
            "砚", "墨", "青", "白", "朗", "笛", "弦", "韵", "竹", "梅", "菊", "荷", "蓉", "珊", "翔", "峰")
ZH_PLACE_HEADS = ("青", "石", "柳", "枫", "沙", "松", "桃", "云", "雾", "铁", "金", "银", "白", "黑", "红",
                  "东", "西", "南", "北", "上", "下", "新", "老", "大", "小", "长", "半", "双", "三", "九")
ZH_PLACE_MIDS = ("山", "河", "水", "林", "田", "岭", "湖", "岗", "溪", "塘", "坝", "滩", "泉", "谷", "崖", "沟")
ZH_PLACE_TAILS = ("镇", "村", "湾", "坡", "街", "桥", "口", "庄", "堡", "路", "巷", "港", "集", "屯", "坪")
ZH_GROUP_TAILS = ("合作社", "工作室", "研究所", "车队", "小组", "协会", "商行", "书社", "工坊", "仓库", "诊所")
ZH_ADJECTIVES = ("旧", "新", "小", "大", "长", "短", "红色的", "蓝色的", "灰色的", "圆形的", "方形的", "木头的",
                 "铁皮的", "干净的", "破损的", "结实的", "轻巧的", "沉重的", "褪色的", "崭新的", "弯曲的",
                 "透明的", "发黄的", "冰凉的", "温热的", "粗糙的", "光滑的", "安静的", "吵闹的", "狭窄的",
                 "宽敞的", "陡峭的", "平坦的", "细长的", "厚实的", "单薄的", "潮湿的", "干燥的", "古怪的")
ZH_NOUNS = ("木箱", "铁锅", "竹篮", "风车", "水桶", "油灯", "铜锁", "钥匙", "雨伞", "草帽", "围巾", "账本",
            "地图", "罗盘", "闹钟", "水壶", "算盘", "板凳", "梯子", "绳子", "渔网", "船桨", "轮胎", "车铃",
            "邮筒", "信封", "相机", "镜子", "扇子", "毛笔", "砚台", "陶罐", "瓷碗", "茶壶", "蒸笼", "磨盘",
            "水泵", "阀门", "齿轮", "电线", "开关", "电池", "仪表", "传感器", "马达", "风扇", "滤网", "管道",
            "栅栏", "台阶", "屋檐", "窗台", "阁楼", "地窖", "井口", "石碑", "牌坊", "凉亭", "码头", "渡口",
            "稻田", "菜园", "果园", "池塘", "山路", "隧道", "站台", "货架", "柜台", "抽屉", "衣柜", "书架",
            "刺猬", "松鼠", "喜鹊", "乌龟", "白鹭", "狐狸", "山羊", "蜗牛", "萤火虫", "麻雀", "水獭", "猫头鹰")
ZH_PLAIN_NOUNS = ("计划", "约定", "习惯", "规矩", "办法", "预算", "日程", "选择", "细节", "错误", "教训",
                  "问题", "结果", "信号", "故事", "旅程", "消息", "决定", "误会", "争论", "节奏", "记忆",
                  "天气", "收成", "集市", "会议", "耐心", "勇气", "秘密", "承诺")
ZH_VERBS = ("搬走了", "修好了", "数了数", "收起了", "埋下了", "抬起了", "整理了", "换掉了", "擦亮了",
            "量了量", "包好了", "打开了", "关上了", "找到了", "弄丢了", "借走了", "送回了", "检查了",
            "称了称", "洗干净了", "装满了", "贴上了", "堆起了", "分给了", "藏起了", "注意到了", "签下了",
            "运走了", "重新做了", "拧紧了", "缝好了", "种下了", "卖掉了", "买回了", "画下了", "记下了")
ZH_GROUPS_PLAIN = ("村委会", "班组", "一家人", "球队", "合唱团", "邻居们", "志愿者", "学徒们", "同学们",
                   "司机们", "租户们", "车间", "值班的人")
ZH_UNITS = ("个", "只", "箱", "斤", "米", "公里", "元", "天", "年", "小时", "分钟", "页", "袋", "桶", "块",
            "张", "把", "盏", "辆", "层", "排", "度", "毫升", "千克", "趟", "次")
ZH_DIGITS = "零一二三四五六七八九"
ZH_TIME_FRAMES = ("{y}年{mo}月", "{mo}月{d}日", "星期{wd}", "每个星期{wd}", "早上{h}点", "晚上{h}点半",
                  "第{k}天", "{y}年的冬天", "那年{mo}月", "过了{k}个月")

ZH_GENRES = ("短篇故事", "产品介绍", "调查报告", "书信", "课程介绍", "演讲稿", "内部通知", "游记", "评论",
             "散文", "公告", "寓言", "使用指南", "新闻稿", "日记", "人物小传", "宣传文案", "案例总结")
ZH_AUDIENCES = ("新会员", "游客", "小学生", "街道办", "顾客", "同事", "家长", "第一次购买的人", "读书会",
                "本地报纸的读者", "夜班员工", "初学者", "老客户", "全校师生", "维修班组", "爱好者")
ZH_QUERY_FRAMES = (
    "请写一篇关于{topic}的{genre}，读者是{audience}，大约{words}字。",
    "帮我写一份{genre}，主题是{topic}，面向{audience}，{words}字左右。",
    "我需要一篇给{audience}看的{genre}，讲{topic}，约{words}字，写得具体一些。",
    "以{topic}为题，为{audience}写一篇{words}字左右的{genre}。",
    "请面向{audience}写{genre}，内容围绕{topic}，篇幅在{words}字上下。",
)
ZH_SENTENCES = (
    "{p}在{l}{v}那个{o}。",
    "{l}的人都没想到，{p}会留下那个{o}。",
    "这个{o}有{n}，{p}吃了一惊。",
    "{t}，{p}给{g}{v}{n}。",
    "{g}在{l}一起{v}一个{a}{w}。",
    "{p}说，那个{o}值{n}。",
    "{t}，{g}坐下来商量{w}的事。",
    "{l}的每一个{w}，都是从{p}开始的。",
    "{p}和{q}{t}{v}那个{o}。",
    "过了{n}，那个{o}才又能用了。",
    "{q}把{n}记在{o}里。",
    "在{o}后面，{p}找到了{n}。",
    "{t}，去{l}的路封了{n}。",
    "{g}问{p}，那个{a}{w}是怎么回事。",
    "{p}把{n}放进一个{a}{o}。",
    "{q}赶到{l}的时候，{o}已经不见了。",
    "{o}的价格涨到了{n}。",
    "{l}门口放着一个{a}{o}。",
    "从{l}来的{g}带来了{n}。",
    "{q}也说不清那个{a}{w}。",
    "我们{t}{v}{n}。",
    "想找{o}，就去问{p}。",
    "{p}相信{l}还有{n}。",
    "后来{o}响了一声，{q}笑了。",
    "{n}里有一半归了{g}。",
    "道理很简单：{p}负责带{o}。",
    "{t}，{g}要试一试那个{o}。",
    "每个{o}能装{n}。",
    "那个{a}{o}现在归{q}了。",
    "先是{o}，然后才是{a}{w}。",
    "从这里到{l}要{n}。",
    "{p}管它叫{a}{w}。",
    "{o}里面装着{n}。",
    "{q}{v}{a}{w}，就动身去了{l}。",
    "{l}的那个{o}已经用了{n}。",
)
ZH_PARAGRAPH_OPENERS = ("", "", "", "", "不过，", "后来，", "与此同时，", "最后，", "所以", "可是", "即便如此，",
                        "到那时，", "眼下，", "说来也怪，", "幸好，", "当然，")
ZH_PLAN_OPEN = (
    "这是一篇{genre}，读者是{audience}。",
    "用户要的是给{audience}看的{genre}。",
    "让我想想，{audience}读这样一篇{genre}最需要什么。",
    "我要写{genre}，{audience}会读到它。",
)
ZH_PLAN_ITEM = (
    "我要写到{x}。",
    "{x}一定要出现。",
    "嗯，也许{x}可以早一点出来。",
    "等等，别忘了{x}。",
    "然后是{x}。",
    "{x}放在中间。",
    "{x}这个细节要写准。",
    "或者，用{x}开头。",
    "结尾附近需要{x}。",
    "不能漏掉{x}。",
    "读者会在意{x}。",
    "接着转到{x}。",
    "也许最后落在{x}上。",
    "我喜欢{x}这个细节。",
    "还有{x}。",
)
ZH_PLAN_FILLER = (
    "语气要朴素。",
    "段落短一点会好读。",
    "嗯，顺序还有点散。",
    "让我边写边看篇幅。",
    "要让读者看见，而不是告诉他。",
    "等等，开头需要一个具体的画面。",
    "或者，我可以从中间写起。",
    "句子清楚就好。",
)
