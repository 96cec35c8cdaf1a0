"""The SciCat sink against the reference SciCat server (tests/scicat_server.py) over real HTTP, API v3 and v4.

Covers login and token refresh, functional-account tokens, raw and derived datasets with
deterministic pids, inputDatasets, proposal and sample ids, 409 -> update, updates that keep earlier
keys (v4 merge patch, v3 read-modify-write), unit spellings SciCat can convert, the 16 MB body limit
(splitting, oversized values refused), the error table and the isolation of refused records, the
registry with secrets from the environment, and a server that dies mid-batch: the records wait in
the outbox and arrive once. Configuration problems keep records waiting instead of dead-lettering
them, and health() reports them: a server that drops the chosen pid (one stray dataset, then no
more creates), a 403 to creates or to the update of every dataset, a wrong url or api (routing 404,
404 pages that are not SciCat's). Subject names with quotes, backslashes, percent signs and
non-ASCII text make valid requests; subjects with control characters are refused.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("requests")

import requests  # noqa: E402

from mxcat.deliver import Backoff, Deliverer  # noqa: E402
from mxcat.errors import ConfigError, SinkRejected, SinkUnavailable  # noqa: E402
from mxcat.outbox import Outbox  # noqa: E402
from mxcat.records import Provenance, Record, Subject, Table  # noqa: E402
from mxcat.sinks import create  # noqa: E402
from mxcat.sinks.scicat import MERGE_PATCH, SciCatSink, dataset_pid, decode_key, encode_key, error_class  # noqa: E402
from tests.helpers.delivery import drain_until_delivered  # noqa: E402
from tests.scicat_server import SciCatServer, mathjs_unit_ok  # noqa: E402

PROV = Provenance(run="r1", program="autoPROC", version="1.0.5", source="/data/visitor/mx2532/id30a1/proc/autoPROC/summary.xml",
                  created="2026-11-21T03:14:15+00:00")


@pytest.fixture(params=["v3", "v4"])
def api(request):
    return request.param


@pytest.fixture()
def server():
    srv = SciCatServer(functional_tokens={"fa-token": ["mx"]}).start()
    yield srv
    srv.stop()


def make_sink(srv: SciCatServer, api: str, **kw) -> SciCatSink:
    opts = {"url": srv.url, "api": api, "username": "ingestor", "password": "ingestor-pw", "owner_group": "mx",
            "contact_email": "mx-support@esrf.fr", "timeout": 5.0, **kw}
    if "token" in kw and "username" not in kw:
        opts.pop("username")
        opts.pop("password")
    return SciCatSink("scicat", **opts)


def rec(subject: Subject, key: str, value, unit: str | None = "none", prov: Provenance = PROV) -> dict:
    return Record(subject, key, value, unit, prov).to_envelope()


def sm(srv: SciCatServer, subject: Subject) -> dict:
    return {decode_key(k): v for k, v in srv.datasets[dataset_pid(subject)]["scientificMetadata"].items()}


def test_raw_and_derived_datasets(server, api, dataset):
    proc = dataset.child(processing="autoproc-1", inputs=(dataset.child(dataset="lyso1_1_2").id,))
    sink = make_sink(server, api, names="human")
    envs = [rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds"),
            rec(dataset, "diffrn_radiation_wavelength.wavelength", 0.9762, "angstroms"),
            rec(dataset.child(image_range="1-100"), "mmcat_collection.exposure_time", 0.02, "seconds"),
            rec(proc, "reflns.d_resolution_high", 1.52, "angstroms"),
            rec(proc, "reflns_shell.outer.pdbx_CC_half", 0.48, "none"),
            rec(proc, "symmetry.space_group_name_H-M", "P 41 21 2", None),
            rec(dataset.at("session"), "mmcat_collection.exposure_time", 0.01, "seconds"),  # above dataset level
            Table(proc, "reflns_shell", ("d_res_high", "pdbx_CC_half"), ((3.0, 0.99), (1.52, 0.48)), PROV).to_envelope()]
    r = sink.put(envs)
    assert sorted(r.stored) == sorted(e["id"] for e in envs) and not r.rejected
    # one login and one create per dataset: never a request per key, none for the session record
    assert server.counts == {"POST login": 1, f"POST {api}/datasets": 2}
    raw, der = server.datasets[dataset_pid(dataset)], server.datasets[dataset_pid(proc)]
    assert raw["pid"] == dataset_pid(dataset) == dataset_pid(dataset.id) and raw["pid"].startswith("mxcat/")
    assert raw["type"] == "raw" and der["type"] == "derived"
    assert raw["creationLocation"] == "/ESRF/ID30A-1" and raw["sourceFolder"] == "/data/visitor/mx2532/id30a1/proc/autoPROC"
    assert raw["creationTime"] == "2026-11-21T03:14:15Z" and raw["ownerGroup"] == "mx" and raw["datasetName"] == "lyso1_1_1"
    if api == "v3":
        assert raw["proposalId"] == "mx2532" and raw["sampleId"] == "lyso1" and raw["principalInvestigator"] == "mx2532"
        assert der["proposalId"] == "mx2532" and der["investigator"] == "mx2532" and "sampleId" not in der
    else:
        assert raw["proposalIds"] == ["mx2532"] and raw["sampleIds"] == ["lyso1"] and raw["principalInvestigators"] == ["mx2532"]
        assert der["proposalIds"] == ["mx2532"] and der["sampleIds"] == ["lyso1"]
    assert der["inputDatasets"] == [dataset_pid(dataset), dataset_pid(dataset.child(dataset="lyso1_1_2"))]
    assert der["usedSoftware"] == ["autoPROC 1.0.5"]
    # flat keys, percent-encoded, with units and human names
    assert "reflns_shell%2Eouter%2Epdbx_CC_half" in der["scientificMetadata"]
    assert all("." not in k for d in (raw, der) for k in d["scientificMetadata"])
    raw_sm, der_sm = sm(server, dataset), sm(server, proc)
    assert raw_sm["mmcat_collection.exposure_time"]["value"] == 0.01 and raw_sm["mmcat_collection.exposure_time"]["unit"] == "s"
    assert raw_sm["image_range.1-100.mmcat_collection.exposure_time"]["value"] == 0.02
    assert der_sm["reflns.d_resolution_high"] == {"value": 1.52, "unit": "angstrom", "human_name": der_sm["reflns.d_resolution_high"]["human_name"]}
    assert der_sm["reflns_shell.outer.pdbx_CC_half"]["unit"] == "" and der_sm["reflns_shell.outer.pdbx_CC_half"]["human_name"]
    assert der_sm["symmetry.space_group_name_H-M"]["value"] == "P 41 21 2"
    assert der_sm["reflns_shell"] == {"value": {"columns": ["d_res_high", "pdbx_CC_half"], "rows": [[3.0, 0.99], [1.52, 0.48]]}, "unit": ""}
    # another sink instance computes the same pids: the same datasets are updated, not duplicated
    again = make_sink(server, api)
    assert not again.put(envs[:2]).rejected
    assert len(server.datasets) == 2 and server.statuses[409] == 1


def test_conflict_means_update_and_updates_keep_earlier_keys(server, api, dataset):
    make_sink(server, api).put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds"),
                                rec(dataset, "mmcat_collection.transmission", 20.0, "percent")])
    server.reset_counts()
    fresh = make_sink(server, api)  # does not know the dataset exists
    r = fresh.put([rec(dataset, "mmcat_collection.transmission", 35.0, "percent", Provenance(run="r2")),
                   rec(dataset, "diffrn_radiation_wavelength.wavelength", 0.9762, "angstroms")])
    assert len(r.stored) == 2
    got = sm(server, dataset)
    assert got["mmcat_collection.exposure_time"]["value"] == 0.01  # kept
    assert got["mmcat_collection.transmission"]["value"] == 35.0  # updated
    assert got["diffrn_radiation_wavelength.wavelength"]["value"] == 0.9762  # added
    if api == "v4":
        assert server.counts == {"POST login": 1, "POST v4/datasets": 1, "PATCH v4/dataset": 1}
        patch = [e for e in server.log if e[0] == "PATCH"][-1]
        assert patch[2] == MERGE_PATCH
    else:
        assert server.counts == {"POST login": 1, "POST v3/datasets": 1, "GET v3/dataset": 1, "PATCH v3/dataset": 1}
    # the sink now knows the dataset: the next update skips the create
    server.reset_counts()
    fresh.put([rec(dataset, "mmcat_collection.flux", 3.2e12, "photons_per_second")])
    assert server.counts[f"POST {api}/datasets"] == 0 and len(sm(server, dataset)) == 4


def test_v4_merge_patch_sends_only_new_keys(server, dataset):
    sink = make_sink(server, "v4")
    sink.put([rec(dataset, f"mmcat_collection.k{i}", float(i)) for i in range(20)])
    body = {}

    orig = sink._session.request

    def spy(method, url, data=None, headers=None, **kw):
        if method == "PATCH":
            body.update(json.loads(data))
            assert headers["Content-Type"] == MERGE_PATCH
        return orig(method, url, data=data, headers=headers, **kw)

    sink._session.request = spy
    sink.put([rec(dataset, "mmcat_collection.k3", 33.0)])
    assert body == {"scientificMetadata": {"mmcat_collection%2Ek3": {"value": 33.0, "unit": ""}}}
    assert len(sm(server, dataset)) == 20


def test_login_refresh_after_expiry(server, api, dataset):
    sink = make_sink(server, api)
    sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
    server.expire_tokens()
    r = sink.put([rec(dataset, "mmcat_collection.transmission", 20.0, "percent")])
    assert len(r.stored) == 1 and server.statuses[401] == 1  # refused once, logged in again, retried
    assert sink.logins == 2 and server.counts["POST login"] == 2
    assert len(sm(server, dataset)) == 2


def test_short_lived_tokens_are_renewed_before_they_expire(dataset):
    with SciCatServer(token_ttl=0.3) as srv:
        sink = make_sink(srv, "v4")
        sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
        time.sleep(0.35)
        sink.put([rec(dataset, "mmcat_collection.transmission", 20.0, "percent")])
        assert sink.logins == 2 and srv.statuses[401] == 0


def test_functional_account_token(server, api, dataset):
    sink = make_sink(server, api, token="fa-token")
    assert len(sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")]).stored) == 1
    assert server.counts["POST login"] == 0 and sink.logins == 0
    assert sink.health().ok
    bad = make_sink(server, api, token="revoked")
    with pytest.raises(SinkUnavailable, match="401"):  # a refused token keeps records waiting
        bad.put([rec(dataset, "mmcat_collection.transmission", 20.0, "percent")])
    assert not bad.health().ok


def test_wrong_password_keeps_records_waiting(server, dataset):
    sink = make_sink(server, "v4", password="wrong")
    with pytest.raises(SinkUnavailable, match="refused the login"):
        sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
    assert not server.datasets


def test_units_are_scicat_spellings(server, api, dataset, onto):
    units = {"kelvins": 100.0, "millimetres": 212.4, "angstroms": 1.5, "degrees": 0.1, "percent": 20.0, "electron_volts": 12700.0,
             "reciprocal_angstroms": 0.66, "megagrays": 1.2, "micrometres": 50.0, "photons_per_second": 3e12, "seconds": 0.01}
    envs = [rec(dataset, f"mmcat_collection.u_{code}", v, code) for code, v in units.items()]
    assert not make_sink(server, api).put(envs).rejected
    got = sm(server, dataset)
    for code in units:
        sent = got[f"mmcat_collection.u_{code}"]["unit"]
        assert sent == onto.units.spelling(code, "scicat")  # the crosswalk's SciCat spelling
        assert sent not in ("kelvins", "millimetres", "angstroms", "degrees") and mathjs_unit_ok(sent), sent
    assert server.unit_failures == []
    # the check would catch unit codes: the server flags what mathjs cannot read
    assert not mathjs_unit_ok("kelvins") and not mathjs_unit_ok("millimetres") and mathjs_unit_ok("K") and mathjs_unit_ok("mm")
    # every SciCat spelling in the crosswalk is one the converter reads
    for code, u in onto.units.units.items():
        if u.scicat:
            assert mathjs_unit_ok(u.scicat), (code, u.scicat)


def test_key_encoding_round_trips():
    for key in ("reflns.d_resolution_high", "symmetry.space_group_name_H-M", "$odd.50%", "a%2Eb", "nul\x00.%00"):
        enc = encode_key(key)
        assert "." not in enc and "\x00" not in enc and not enc.startswith("$") and decode_key(enc) == key


def test_body_limit_splits_v4_updates(dataset):
    limit = 64 * 1024
    with SciCatServer(max_body=limit) as srv:
        sink = make_sink(srv, "v4", max_body=limit)
        big = "x" * 1000
        envs = [rec(dataset, f"mmcat_processing.note_{i}", big, None) for i in range(200)]  # ~210 kB in all
        huge = rec(dataset, "mmcat_processing.message", "y" * (limit + 10), None)
        r = sink.put([*envs, huge])
        assert r.rejected == {huge["id"]: r.rejected[huge["id"]]} and "request body limit" in r.rejected[huge["id"]]
        assert len(r.stored) == 200 and len(sm(srv, dataset)) == 200
        assert srv.counts["POST v4/datasets"] == 1 and srv.counts["PATCH v4/dataset"] >= 3
        assert max(e[3] for e in srv.log) <= limit and srv.statuses[413] == 0


def test_body_limit_v3_refuses_what_cannot_fit_one_patch(dataset):
    limit = 64 * 1024
    with SciCatServer(max_body=limit) as srv:
        sink = make_sink(srv, "v3", max_body=limit)
        envs = [rec(dataset, f"mmcat_processing.note_{i}", "x" * 1000, None) for i in range(100)]
        r = sink.put(envs)
        assert r.stored and r.rejected and len(r.stored) + len(r.rejected) == 100
        assert all("v3 PATCH replaces it whole" in why for why in r.rejected.values())
        assert len(sm(srv, dataset)) == len(r.stored)
        assert max(e[3] for e in srv.log) <= limit and srv.statuses[413] == 0


def test_server_body_limit_below_ours_isolates_to_the_record(dataset):
    with SciCatServer(max_body=70 * 1024) as srv:  # the server takes less than the sink sends
        sink = make_sink(srv, "v4", max_body=200 * 1024)
        envs = [rec(dataset, f"mmcat_processing.note_{i}", "x" * 1000, None) for i in range(100)]
        huge = rec(dataset, "mmcat_processing.message", "y" * (100 * 1024), None)
        r = sink.put([*envs, huge])
        assert list(r.rejected) == [huge["id"]] and "413" in r.rejected[huge["id"]]
        assert len(r.stored) == 100 and len(sm(srv, dataset)) == 100


@pytest.mark.parametrize("first", [True, False], ids=["create", "update"])
def test_refused_record_is_isolated(api, dataset, first):
    with SciCatServer(forbidden_keys={encode_key("reflns.pdbx_redundancy")}) as srv:
        sink = make_sink(srv, api)
        if not first:
            sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
        envs = [rec(dataset, f"mmcat_collection.k{i}", float(i)) for i in range(6)]
        bad = rec(dataset, "reflns.pdbx_redundancy", 6.5)
        r = sink.put([*envs[:3], bad, *envs[3:]])
        assert list(r.rejected) == [bad["id"]] and "400" in r.rejected[bad["id"]] and "schema" in r.rejected[bad["id"]]
        assert sorted(r.stored) == sorted(e["id"] for e in envs)
        assert len(sm(srv, dataset)) == 6 + (0 if first else 1)


def test_refused_dataset_refuses_its_records_with_the_reason(server, api, dataset):
    envs = [rec(dataset, f"mmcat_collection.k{i}", float(i)) for i in range(4)]
    bad_email = make_sink(server, api, contact_email="nobody")
    r = bad_email.put(envs[:2])
    assert all("contactEmail must be an email" in why for why in r.rejected.values()) and len(r.rejected) == 2


def test_loopback_error_payloads_are_read(dataset):
    with SciCatServer(v3_errors="loopback", forbidden_keys={encode_key("reflns.pdbx_redundancy")}) as srv:
        r = make_sink(srv, "v3").put([rec(dataset, "reflns.pdbx_redundancy", 6.5)])
        (why,) = r.rejected.values()
        assert "422" in why and "do not conform" in why


def test_error_table():
    for status in (500, 502, 503, 504, 429, 408, 401, 404):
        assert error_class(status) is SinkUnavailable, status
    for status in (400, 403, 413, 422, 418):
        assert error_class(status) is SinkRejected, status


@pytest.mark.parametrize("status", [503, 500, 429])
def test_busy_server_is_unavailable(server, dataset, status):
    sink = make_sink(server, "v4")
    server.fail_next(status)
    with pytest.raises(SinkUnavailable, match=str(status)):
        sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
    assert sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")]).stored


def test_unreachable_and_silent_servers_are_unavailable(dataset):
    srv = SciCatServer().start()
    srv.stop()  # nobody listens on this port any more
    sink = make_sink(srv, "v4", timeout=1.0)
    with pytest.raises(SinkUnavailable, match="unreachable"):
        sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
    assert not sink.health().ok
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        silent = SciCatSink("s", url=f"http://127.0.0.1:{s.getsockname()[1]}", token="t", owner_group="mx", contact_email="a@b.org",
                            timeout=0.3)
        with pytest.raises(SinkUnavailable, match="timed out"):
            silent.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])


def test_oversized_tables_and_bad_subjects_are_refused(server, dataset):
    sink = make_sink(server, "v4", max_table_bytes=1000)
    t = Table(dataset, "mmcat_live_image", ("image_number", "n_spots_total"), tuple((i, i * 3) for i in range(500)), PROV).to_envelope()
    weird = dict(rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds"), id="w", subject_id="bad",
                 subject={"dataset": "x", "colour": "red"})
    ok = rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")
    r = sink.put([t, weird, ok])
    assert r.stored == [ok["id"]] and "max_table_bytes" in r.rejected[t["id"]] and "subject" in r.rejected["w"]


def test_created_through_the_registry_with_secret_from_environment(server, dataset, monkeypatch):
    monkeypatch.setenv("MXCAT_TEST_SCICAT_PW", "ingestor-pw")
    opts = {"url": server.url, "api": "v4", "username": "ingestor", "password_env": "MXCAT_TEST_SCICAT_PW", "owner_group": "mx",
            "access_groups": ["mx2532"], "contact_email": "mx-support@esrf.fr", "pid_prefix": "20.500.12345", "names": "human"}
    sink = create("x", "scicat", opts)
    assert isinstance(sink, SciCatSink) and sink.name == "x"
    assert len(sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")]).stored) == 1
    doc = server.datasets[dataset_pid(dataset, "20.500.12345")]
    assert doc["accessGroups"] == ["mx2532"]
    assert "ingestor-pw" not in repr(sink.__dict__.get("name")) and "ingestor-pw" not in sink.health().detail
    with pytest.raises(ConfigError, match="unknown option"):
        create("x", "scicat", {**opts, "password": "inline"})  # secrets only from the environment or a file
    with pytest.raises(ConfigError, match="credentials"):
        create("x", "scicat", {k: v for k, v in opts.items() if k not in ("password_env",)})


def test_server_semantics_v3_patch_replaces_and_v4_merges(server):
    """The fixture itself: why the sink reads before writing on v3."""
    tok = requests.post(f"{server.url}/api/v3/auth/login", json={"username": "ingestor", "password": "ingestor-pw"}, timeout=5)
    assert tok.status_code == 201
    h = {"Authorization": f"Bearer {tok.json()['access_token']}"}
    base = {"owner": "o", "ownerGroup": "mx", "contactEmail": "a@b.org", "sourceFolder": "/d", "creationTime": "2026-01-01T00:00:00Z",
            "principalInvestigator": "pi", "creationLocation": "/F/BL", "type": "raw", "scientificMetadata": {"a": {"value": 1, "unit": ""}}}
    assert requests.post(f"{server.url}/api/v3/Datasets", json={**base, "pid": "p/1"}, headers=h, timeout=5).status_code == 201
    dup = requests.post(f"{server.url}/api/v3/Datasets", json={**base, "pid": "p/1"}, headers=h, timeout=5)
    assert dup.status_code == 409
    bad = requests.post(f"{server.url}/api/v3/Datasets", json={**base, "pid": "p/2", "owner": None, "colour": "red"}, headers=h, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "Bad Request" and "property colour should not exist" in bad.json()["message"]
    url = f"{server.url}/api/v3/Datasets/p%2F1"
    assert requests.patch(url, json={"scientificMetadata": {"b": {"value": 2, "unit": ""}}}, headers=h, timeout=5).status_code == 200
    assert set(requests.get(url, headers=h, timeout=5).json()["scientificMetadata"]) == {"b"}  # replaced whole
    v4 = f"{server.url}/api/v4/datasets/p%2F1"
    mp = requests.patch(v4, data=json.dumps({"scientificMetadata": {"c": {"value": 3, "unit": ""}}}),
                        headers={**h, "Content-Type": MERGE_PATCH}, timeout=5)
    assert mp.status_code == 200 and set(mp.json()["scientificMetadata"]) == {"b", "c"}
    assert requests.patch(v4, json={"scientificMetadata": {"d.e": {"value": 1}}}, headers=h, timeout=5).status_code == 400
    assert requests.get(url, timeout=5).status_code == 401
    big = requests.post(f"{server.url}/api/v4/datasets", data=b"x" * (16 * 1024 * 1024 + 1), headers=h, timeout=10)
    assert big.status_code == 413


@pytest.mark.parametrize("api_", ["v3", "v4"])
def test_server_dies_mid_batch_records_wait_and_arrive_once(tmp_path, dataset, api_):
    srv = SciCatServer().start()
    try:
        box = Outbox(tmp_path / "outbox.sqlite")
        sink = make_sink(srv, api_, timeout=2.0)
        d = Deliverer(box, {"scicat": sink}, batch_size=200, backoff=Backoff(initial=0.02, maximum=0.1, jitter=0.0))
        first = [rec(dataset.child(dataset=f"d{i}"), f"mmcat_collection.k{j}", float(j)) for i in range(3) for j in range(5)]
        box.put(first, ["scicat"])
        assert d.drain().delivered == 15
        second = [rec(dataset.child(dataset=f"e{i}"), f"mmcat_collection.k{j}", float(i + j)) for i in range(6) for j in range(5)]
        box.put(second, ["scicat"])
        srv.stop_after(3)  # a few datasets get written, then the server dies in the middle of the batch
        s = d.drain()
        assert s.delivered == 0 and s.retried == 30 and box.pending("scicat") == 30
        assert {r.state for r in box.status()} == {"DONE", "PENDING"}
        written = sum(1 for pid in srv.datasets if pid in {dataset_pid(dataset.child(dataset=f"e{i}")) for i in range(6)})
        assert 0 < written < 6
        srv.start()  # back on the same port, with its data
        delivered = drain_until_delivered(d, box, "scicat", timeout=15)
        assert box.pending("scicat") == 0 and delivered == 30
        assert len(srv.datasets) == 9
        for i in range(6):
            assert sm(srv, dataset.child(dataset=f"e{i}")) == {f"mmcat_collection.k{j}": {"value": float(i + j), "unit": ""} for j in range(5)}
        box.close()
        sink.close()
    finally:
        srv.stop()


def test_concurrent_puts_share_one_server(server, dataset):
    """Two sinks (two deliverer processes) writing the same datasets: nothing lost, nothing doubled."""
    errors = []

    def worker(n):
        try:
            s = make_sink(server, "v4")
            for i in range(5):
                s.put([rec(dataset.child(dataset=f"c{i}"), f"mmcat_collection.w{n}_{j}", float(j)) for j in range(10)])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(server.datasets) == 5 and all(len(sm(server, dataset.child(dataset=f"c{i}"))) == 20 for i in range(5))


# -- configuration problems wait in the outbox ---------------------------------------------------------


def test_owner_group_refused_on_create_keeps_records_waiting(server, api, dataset, tmp_path):
    sink = make_sink(server, api, owner_group="not-my-group")  # 403: not one of the caller's groups
    envs = [rec(dataset.child(dataset=f"d{i}"), f"mmcat_collection.k{j}", float(j)) for i in range(3) for j in range(4)]
    with pytest.raises(SinkUnavailable, match="403") as err:
        sink.put(envs)
    assert "'not-my-group'" in err.value.reason and "CREATE_DATASET_WITH_PID_GROUPS" in err.value.reason
    h = sink.health()
    assert not h.ok and "not-my-group" in h.detail
    box = Outbox(tmp_path / "outbox.sqlite")
    box.put(envs, ["scicat"])
    s = Deliverer(box, {"scicat": sink}, backoff=Backoff(initial=0.01, maximum=0.01, jitter=0.0)).drain(timeout=10)
    assert s.dead == 0 and s.retried == 12 and box.pending("scicat") == 12 and not server.datasets
    box.close()


@pytest.mark.parametrize("api_", ["v3", "v4"])
def test_server_that_drops_the_chosen_pid_gets_one_stray_then_no_creates(api_, dataset, caplog):
    users = {"ingestor": ("ingestor-pw", ["mx"]), "admin": ("admin-pw", ["mx", "pid-choosers"])}
    with SciCatServer(users=users, pid_groups={"pid-choosers"}, pid_refusal="drop") as srv:
        known = dataset.child(dataset="known")
        admin = make_sink(srv, api_, username="admin", password="admin-pw")  # an account allowed to choose pids
        assert admin.put([rec(known, "mmcat_collection.k0", 0.0)]).stored
        srv.reset_counts()
        sink = make_sink(srv, api_)
        with caplog.at_level(logging.ERROR, logger="mxcat.sinks.scicat"):
            for run in ("r1", "r2", "r3"):  # three batches for ONE subject
                with pytest.raises(SinkUnavailable, match="CREATE_DATASET_WITH_PID_GROUPS"):
                    sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds", Provenance(run=run))])
        (stray,) = set(srv.datasets) - {dataset_pid(known)}
        assert srv.counts[f"POST {api_}/datasets"] == 1 and sink.strays == {dataset_pid(dataset): stray}
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and stray in errors[0] and dataset_pid(dataset) in errors[0]
        h = sink.health()
        assert not h.ok and stray in h.detail
        # datasets that exist are still updated; the records of new ones are left in the outbox (neither stored nor refused)
        old, new = rec(known, "mmcat_collection.k1", 1.0), rec(dataset.child(dataset="new"), "mmcat_collection.k1", 1.0)
        r = sink.put([old, new])
        assert r.stored == [old["id"]] and not r.rejected and srv.counts[f"POST {api_}/datasets"] == 1
        assert sm(srv, known)["mmcat_collection.k1"]["value"] == 1.0
        # the account is fixed and mxcat restarted: the records arrive in the dataset of the chosen pid
        srv.pid_groups.add("mx")
        again = make_sink(srv, api_)
        assert len(again.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds"), new]).stored) == 2
        assert dataset_pid(dataset) in srv.datasets and dataset_pid(dataset.child(dataset="new")) in srv.datasets
        assert len(srv.datasets) == 4 and again.health().ok


def test_pid_choice_refused_with_403_waits_and_recovers(api, dataset):
    with SciCatServer(pid_groups={"pid-choosers"}) as srv:  # current backends: 403 to a chosen pid
        sink = make_sink(srv, api)
        with pytest.raises(SinkUnavailable, match="CREATE_DATASET_WITH_PID_GROUPS") as err:
            sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
        assert "explicit PID" in err.value.reason or "Unauthorized access" in err.value.reason
        assert not srv.datasets and not sink.health().ok
        srv.pid_groups.add("mx")  # fixed on the server: no restart needed, nothing was created meanwhile
        assert sink.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")]).stored
        assert list(srv.datasets) == [dataset_pid(dataset)] and sink.health().ok


def test_wrong_api_or_url_keeps_records_waiting(tmp_path, dataset):
    with SciCatServer(apis=("v3",)) as srv:  # an older backend: no /api/v4
        sink = make_sink(srv, "v4")
        h = sink.health()  # what `mxcat config check` sees, before anything was sent
        assert not h.ok and "/api/v4/datasets" in h.detail
        box = Outbox(tmp_path / "outbox.sqlite")
        box.put([rec(dataset.child(dataset=f"d{i}"), "mmcat_collection.exposure_time", 0.01, "seconds") for i in range(20)], ["scicat"])
        backoff = Backoff(initial=0.01, maximum=0.01, jitter=0.0)
        s = Deliverer(box, {"scicat": sink}, backoff=backoff).drain(timeout=20)
        assert s.dead == 0 and s.retried == 20 and box.pending("scicat") == 20
        assert "no route POST /api/v4/datasets" in s.errors[0] and srv.url in s.errors[0]
        time.sleep(0.05)
        fixed = make_sink(srv, "v3")  # the configuration is corrected: the same records arrive
        assert Deliverer(box, {"scicat": fixed}, backoff=backoff).drain(timeout=20).delivered == 20
        box.close()
        prefixed = make_sink(srv, "v4", url=srv.url + "/scicat")  # a reverse-proxy prefix that is not there
        with pytest.raises(SinkUnavailable, match="no login route"):
            prefixed.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
        with SciCatServer(functional_tokens={"fa": ["mx"]}) as v4:
            tokened = make_sink(v4, "v4", url=v4.url + "/scicat", token="fa")
            with pytest.raises(SinkUnavailable, match="no route POST /api/v4/datasets"):
                tokened.put([rec(dataset, "mmcat_collection.exposure_time", 0.01, "seconds")])
            assert not tokened.health().ok


def test_404_page_that_is_not_scicat_is_no_missing_dataset(server, api, dataset):
    sink = make_sink(server, api)
    sink.put([rec(dataset, "mmcat_collection.k0", 0.0)])
    server.reset_counts()
    server.fail_next(404, page="<html><body><h1>404 Not Found</h1>nginx</body></html>")  # a proxy lost its route
    with pytest.raises(SinkUnavailable, match="no route"):
        sink.put([rec(dataset, "mmcat_collection.k1", 1.0)])
    assert server.counts[f"POST {api}/datasets"] == 0  # not taken for a deleted dataset to create again
    assert not sink.health().ok
    assert sink.put([rec(dataset, "mmcat_collection.k1", 1.0)]).stored and sink.health().ok


def test_forbidden_update_refuses_one_dataset_and_waits_when_all_are(api, dataset):
    users = {"ingestor": ("ingestor-pw", ["mx"]), "other": ("other-pw", ["other"])}
    with SciCatServer(users=users) as srv:
        theirs = dataset.child(dataset="theirs")  # a dataset of another owner group under the pid this sink computes
        assert make_sink(srv, api, username="other", password="other-pw", owner_group="other").put([rec(theirs, "k.a", 1.0)]).stored
        sink = make_sink(srv, api)
        a, b = rec(theirs, "mmcat_collection.k1", 1.0), rec(dataset, "mmcat_collection.k1", 1.0)
        r = sink.put([a, b])
        assert r.stored == [b["id"]] and list(r.rejected) == [a["id"]] and "403" in r.rejected[a["id"]]
        assert "owner group" in r.rejected[a["id"]]
        with pytest.raises(SinkUnavailable, match="every dataset of the batch"):  # the account, not one dataset
            sink.put([rec(theirs, "mmcat_collection.k2", 2.0), rec(theirs, "mmcat_collection.k3", 3.0)])


def test_odd_subject_names_make_valid_requests(server, api):
    odd = 'a "q" \\ é✓ 😀 <&> $x.y%2E%00'  # subject names cannot hold control characters (Subject refuses them)
    s = Subject(facility="ESRF", beamline="ID30A-1", proposal="mx2532", session=odd, sample=odd, dataset=odd)
    proc = s.child(processing=odd)
    envs = [rec(s, "mmcat_collection.exposure_time", 0.01, "seconds"),
            rec(s.child(image_range=odd), "mmcat_collection.exposure_time", 0.02, "seconds"),
            rec(proc, "reflns.d_resolution_high", 1.5, "angstroms"),
            rec(proc, "mmcat_processing.message", odd, None)]
    r = make_sink(server, api).put(envs)
    assert not r.rejected and len(r.stored) == 4
    raw = server.datasets[dataset_pid(s)]
    assert raw["datasetName"] == odd and raw["description"].endswith(f"dataset={odd}")
    assert sm(server, s)[f"image_range.{odd}.mmcat_collection.exposure_time"]["value"] == 0.02
    assert sm(server, proc)["mmcat_processing.message"]["value"] == odd
    assert server.datasets[dataset_pid(proc)]["inputDatasets"] == [dataset_pid(s)]
    # an envelope from before that rule, with control characters in its subject: refused with the reason, not sent
    old = dict(rec(s, "mmcat_collection.k1", 1.0), id="old", subject_id="old-subject", subject={**s.to_dict(), "dataset": "d\x00\t"})
    r = make_sink(server, api).put([old, rec(s, "mmcat_collection.k2", 2.0)])
    assert len(r.stored) == 1 and list(r.rejected) == ["old"] and "invalid subject" in r.rejected["old"]
