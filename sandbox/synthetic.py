"""Synthetic citizens: a table of made-up people of Qingdao, for the demo and the view
benchmarks.

Twelve columns, none of them real data: a name, a resident ID number (valid check
character, birth date and district code), a mobile number, sex, birth date, age, an
address in one of Qingdao's districts, occupation, a diagnosis, yearly income, clinic
visits and the date of the last visit. Written to Parquet in batches of a million rows,
so that any size is generated in flat memory; the same ``rows`` and ``seed`` always give
the same table.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH = 1_000_000
DISTRICTS = {  # division code -> district of Qingdao
    "370202": "市南区",
    "370203": "市北区",
    "370211": "黄岛区",
    "370212": "崂山区",
    "370213": "李沧区",
    "370214": "城阳区",
    "370215": "即墨区",
    "370281": "胶州市",
    "370283": "平度市",
    "370285": "莱西市",
}
STREETS = ["香港中路", "延安三路", "长江路", "海尔路", "九水路", "正阳路", "蓝鳌路", "福州路"]
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华")
OCCUPATIONS = ["教师", "工程师", "医生", "司机", "厨师", "会计", "渔民", "学生", "退休", "个体"]
DIAGNOSES = ["高血压", "糖尿病", "哮喘", "冠心病", "胃炎", "无"]
WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
CHECK = np.array(list("10X98765432"))
EPOCH = date(1940, 1, 1)
SPAN_DAYS = (date(2008, 12, 31) - EPOCH).days
TODAY = date(2026, 11, 25)

# What each column is, as its catalog entry states it:
# (name, type, description, sensitivity class, identifier kind held)
FIELDS: list[tuple[str, str, str, str, str | None]] = [
    ("name", "string", "姓名", "direct_identifier", None),
    ("id_number", "string", "公民身份号码", "direct_identifier", "resident_id"),
    ("phone", "string", "手机号码", "direct_identifier", "mobile"),
    ("sex", "string", "性别", "quasi_identifier", None),
    ("birth_date", "date", "出生日期", "quasi_identifier", None),
    ("age", "integer", "年龄", "quasi_identifier", None),
    ("address", "string", "住址", "quasi_identifier", None),
    ("occupation", "string", "职业", "quasi_identifier", None),
    ("diagnosis", "string", "主要诊断", "sensitive_attribute", None),
    ("income", "integer", "年收入（元）", "sensitive_attribute", None),
    ("visits", "integer", "年度就诊次数", "ordinary", None),
    ("last_visit", "date", "最近就诊日期", "quasi_identifier", None),
]


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Each value's ``width`` decimal digits, most significant first: shape (n, width)."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers) % 10


def batch(rows: int, rng: np.random.Generator) -> pa.Table:
    codes = np.array(list(DISTRICTS))
    district = rng.integers(0, len(codes), rows)
    days = rng.integers(0, SPAN_DAYS, rows)
    born = np.datetime64(EPOCH, "D") + days.astype("timedelta64[D]")
    ymd = born.astype("datetime64[D]").astype(object)
    year = np.fromiter((d.year for d in ymd), np.int64, rows)
    month = np.fromiter((d.month for d in ymd), np.int64, rows)
    day = np.fromiter((d.day for d in ymd), np.int64, rows)
    sequence = rng.integers(0, 1000, rows)
    sex = np.where(sequence % 2 == 1, "男", "女")
    head = np.concatenate(
        [
            _digits(codes[district].astype(np.int64), 6),
            _digits(year * 10_000 + month * 100 + day, 8),
            _digits(sequence, 3),
        ],
        axis=1,
    )
    check = CHECK[(head @ WEIGHTS) % 11]
    head_text = pc.binary_join_element_wise(
        pa.array(codes[district]),
        pc.utf8_lpad(pc.cast(pa.array(year * 10_000 + month * 100 + day), pa.string()), 8, "0"),
        pc.utf8_lpad(pc.cast(pa.array(sequence), pa.string()), 3, "0"),
        "",
    )
    id_number = pc.binary_join_element_wise(head_text, pa.array(check), "")
    phone = pc.binary_join_element_wise(
        pa.array(np.array(["13", "15", "18", "17"])[rng.integers(0, 4, rows)]),
        pc.utf8_lpad(pc.cast(pa.array(rng.integers(0, 10**9, rows)), pa.string()), 9, "0"),
        "",
    )
    name = pc.binary_join_element_wise(
        pa.array(np.array(SURNAMES)[rng.integers(0, len(SURNAMES), rows)]),
        pa.array(np.array(GIVEN)[rng.integers(0, len(GIVEN), rows)]),
        pa.array(np.array(GIVEN)[rng.integers(0, len(GIVEN), rows)]),
        "",
    )
    address = pc.binary_join_element_wise(
        pa.array(np.array(["山东省青岛市"] * 1)[np.zeros(rows, dtype=np.int64)]),
        pa.array(np.array(list(DISTRICTS.values()))[district]),
        pa.array(np.array(STREETS)[rng.integers(0, len(STREETS), rows)]),
        pc.cast(pa.array(rng.integers(1, 400, rows)), pa.string()),
        pa.array(np.full(rows, "号")),
        "",
    )
    age = TODAY.year - year - ((month * 100 + day) > (TODAY.month * 100 + TODAY.day))
    last_visit = np.datetime64(date(2024, 1, 1), "D") + rng.integers(0, 1060, rows).astype(
        "timedelta64[D]"
    )
    return pa.table(
        {
            "name": name,
            "id_number": id_number,
            "phone": phone,
            "sex": pa.array(sex),
            "birth_date": pa.array(born.astype("datetime64[D]")),
            "age": pa.array(age),
            "address": address,
            "occupation": pa.array(np.array(OCCUPATIONS)[rng.integers(0, len(OCCUPATIONS), rows)]),
            "diagnosis": pa.array(np.array(DIAGNOSES)[rng.integers(0, len(DIAGNOSES), rows)]),
            "income": pa.array(rng.lognormal(10.5, 0.6, rows).round().astype(np.int64)),
            "visits": pa.array(rng.poisson(3, rows)),
            "last_visit": pa.array(last_visit),
        }
    )


def write_citizens(path: Path, rows: int, *, seed: int = 2026) -> Path:
    """Write ``rows`` synthetic citizens to ``path`` (Parquet) unless it is there already."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    writer: pq.ParquetWriter | None = None
    try:
        done = 0
        while done < rows:
            table = batch(min(BATCH, rows - done), rng)
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            done += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    partial.replace(path)
    return path
