#!/usr/bin/env python
"""Writes the sample corpus (``NN.txt`` + ``NN.ann``) from the marked-up sentences below.

The sentences are the project's own, in the style of Chinese diabetes guidelines; they are not taken from
the Ruijin corpus. ``[text|Type]`` marks an entity; a ``\\n`` inside one makes it cross a line break, written
as two fragments as brat does. ``OVERLAPS`` adds entities over text that is already marked (nested or
overlapping, which BIO cannot encode). Run it from anywhere: ``python data/sample/make_sample.py``.
"""

import re
from pathlib import Path

DOCUMENTS = {
    "01": (
        "[2 型糖尿病|Disease]是一种以[慢性高血糖|Symptom]为特征的代谢性疾病，[胰岛素抵抗|Reason]和[胰岛 β 细胞|Anatomy]"
        "功能[减退|Test_Value]是其主要病因。\n"
        "诊断依据[空腹血糖|Test] ≥ [7.0 mmol/L|Test_Value]或[口服葡萄糖耐量试验|Test]（[OGTT|Test]）"
        "[2 h 血糖|Test] ≥ [11.1 mmol/L|Test_Value]。\n"
        "[肥胖|Reason]、[缺乏运动|Reason]和[家族史|Reason]均可增加发病风险。\n"
        "患者常有[多饮|Symptom]、[多尿|Symptom]、[体重下降|Symptom]等表现，[病程|Test]较长者可出现[糖尿病\n肾病|Disease]。\n"
    ),
    "02": (
        "[二甲双胍|Drug]是[2 型糖尿病|Disease]的一线用药，起始剂量[500 mg|Amount]，[每日 2 次|Frequency]，"
        "[随餐|Method][口服|Method]。\n"
        "常见[不良反应|SideEff]为[腹泻|SideEff]和[恶心|SideEff]，多在[2 周|Duration]内[缓解|Level]。\n"
        "[eGFR|Test] < [30 ml/min|Test_Value]时禁用[二甲双胍|Drug]，以免发生[乳酸\n酸中毒|SideEff]。\n"
        "[磺脲类药物|Drug]可引起[低血糖|SideEff]，[老年|Reason]患者应从[小剂量|Amount]开始。\n"
    ),
    "03": (
        "[生活方式干预|Treatment]包括[饮食控制|Treatment]和[运动疗法|Treatment]，建议每周[运动|Treatment]"
        "[150 min|Duration]以上。\n"
        "[糖化血红蛋白|Test]（[HbA1c|Test]）目标一般为 < [7%|Test_Value]，[妊娠期|Reason]患者要求更[严格|Level]。\n"
        "对[重度|Level][肥胖|Disease]患者可考虑[代谢手术|Operation]，如[胃旁路术|Operation]和[袖状胃切除术|Operation]。\n"
        "术后[6 个月|Duration]内需[每月|Frequency]复查[血糖|Test]和[体重|Test]。\n"
    ),
    "04": (
        "[胰岛素|Drug]治疗适用于[1 型糖尿病|Disease]及[口服药|Drug]控制不佳者，[睡前|Frequency][皮下注射|Method]"
        "[甘精胰岛素|Drug][10 U|Amount]。\n"
        "[注射部位|Anatomy]可选[腹部|Anatomy]、[大腿|Anatomy]外侧，应[轮换|Method]以防[皮下\n脂肪增生|SideEff]。\n"
        "[糖尿病酮症酸中毒|Disease]表现为[恶心|Symptom]、[呕吐|Symptom]和[呼吸深快|Symptom]，"
        "[血酮|Test][明显|Level][升高|Test_Value]。\n"
        "[胰腺|Anatomy]切除术后的[糖尿病|Disease]亦需[胰岛素|Drug]治疗，[每日 3 次|Frequency][餐前|Method]注射。\n"
    ),
    "05": (
        "[糖尿病视网膜病变|Disease]是[微血管并发症|Disease]之一，应[每年|Frequency]行[眼底检查|Test]。\n"
        "[增殖期|Level]病变需[激光光凝|Operation]或[玻璃体切割术|Operation]治疗。\n"
        "[糖尿病周围神经病变|Disease]可致[足部|Anatomy][麻木|Symptom]、[刺痛|Symptom]，[10 g 尼龙丝试验|Test]"
        "可用于筛查。\n"
        "[长期|Duration][高血糖|Reason]、[高血压|Reason]和[吸烟|Reason]会加速[血管|Anatomy]损害。\n"
    ),
    "06": (
        "[阿卡波糖|Drug][50 mg|Amount][每日 3 次|Frequency]，与[第一口饭|Method]同服，可降低[餐后血糖|Test]。\n"
        "部分患者出现[腹胀|SideEff]、[排气增多|SideEff]，[轻度|Level]者无需停药。\n"
        "[DPP-4 抑制剂|Drug]如[西格列汀|Drug][100 mg|Amount][每日 1 次|Frequency]，[疗程|Test]至少[3 个月|Duration]。\n"
        "[GLP-1 受体激动剂|Drug]可减轻[体重|Test]，[每周 1 次|Frequency][皮下注射|Method]。\n"
    ),
    "07": (
        "[妊娠期糖尿病|Disease]孕妇应在孕 [24~28 周|Duration]行[75 g OGTT|Test]。\n"
        "[饮食控制|Treatment]无效时首选[胰岛素|Drug]，[血糖|Test][控制良好|Level]者预后较好。\n"
        "[新生儿低血糖|Disease]和[巨大儿|Disease]是常见不良结局，[产后|Duration][6~12 周|Duration]需复查[OGTT|Test]。\n"
        "[甲状腺|Anatomy]功能[异常|Test_Value]也可影响[糖代谢|Test]，必要时[手术|Operation]治疗。\n"
    ),
    "14": (
        "[糖尿病足|Disease]是[下肢|Anatomy][溃疡|Symptom]和[截肢|Operation]的主要原因。\n"
        "[足部|Anatomy]护理包括[每日|Frequency]检查[足背动脉|Anatomy]搏动，[ABI|Test] < [0.9|Test_Value]提示[下肢动脉\n"
        "病变|Disease]。\n"
        "[感染|Reason]严重者需[清创术|Operation]及[抗生素|Drug][静脉滴注|Method][2 周|Duration]。\n"
        "[戒烟|Treatment]和[减重|Treatment]可[显著|Level]改善预后。\n"
    ),
}

# (document, text already marked, type): nested or overlapping entities that BIO cannot also encode.
OVERLAPS = [
    ("01", "胰岛 β 细胞", "Anatomy"),  # duplicate span, other id: both annotators marked it
    ("03", "糖化血红蛋白", "Test_Value"),
    ("05", "糖尿病视网膜病变", "Disease"),
    ("04", "皮下注射", "Treatment"),
]
NESTED = [("05", "视网膜", "Anatomy"), ("07", "甲状腺", "Anatomy"), ("02", "乳酸", "Test")]
MARK = re.compile(r"\[([^\[\]|]+)\|([A-Za-z_]+)\]")


def render(marked: str) -> tuple[str, list[tuple[str, int, int]]]:
    """Plain text and (type, start, end) of the marked entities."""
    text, entities, position = [], [], 0
    for match in MARK.finditer(marked):
        text.append(marked[position : match.start()])
        start = sum(map(len, text))
        text.append(match.group(1))
        entities.append((match.group(2), start, start + len(match.group(1))))
        position = match.end()
    text.append(marked[position:])
    return "".join(text), entities


def ann_line(number: int, entity_type: str, start: int, end: int, text: str) -> str:
    fragments, fragment_start = [], start
    for position in range(start, end):
        if text[position] == "\n":
            fragments.append((fragment_start, position))
            fragment_start = position + 1
    fragments.append((fragment_start, end))
    offsets = ";".join(f"{a} {b}" for a, b in fragments)
    covered = " ".join(text[a:b] for a, b in fragments)
    return f"T{number}\t{entity_type} {offsets}\t{covered}\n"


def main():
    folder = Path(__file__).resolve().parent
    for document_id, marked in DOCUMENTS.items():
        text, entities = render(marked)
        for extra_id, substring, entity_type in OVERLAPS + NESTED:
            if extra_id == document_id:
                start = text.index(substring)
                entities.append((entity_type, start, start + len(substring)))
        lines = [ann_line(number, *entity, text) for number, entity in enumerate(entities, start=1)]
        lines.append("#1\tAnnotatorNotes T1\tsample note\n")
        (folder / f"{document_id}.txt").write_text(text, encoding="utf-8")
        (folder / f"{document_id}.ann").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
