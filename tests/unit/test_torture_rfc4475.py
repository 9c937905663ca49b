"""RFC 4475 torture messages through parse_message, each with what a UAC's parser must do.

The messages are written from our knowledge of RFC 4475 (bytes may differ from the RFC's; each
keeps the property its RFC test is about). Non-printable bytes are written as the RFC writes
them, `<hex>..</hex>`, and so are trailing spaces. Each row of the table says whether the parser
accepts or rejects the message and why; accepted ones are checked field by field below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from sipstack.errors import SipParseError
from sipstack.message import Request, Response, parse_message

SDP = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)
assert len(SDP) == 150

MULTIPART = (
    b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n"
    b"\r\nHello\r\n--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n"
    b"0\x82\x01R\x06\t*\x86H\x86\xf7\r\x01\x07\x02\xa0\x82\x01C0\x82\x01?\x02\x01\x011\x0b"
    b"\r\n\r\n\x00\xff\xfe signature bytes, CRLFs and NULs included\r\n"
    b"--7a9cbec02ceef655--\r\n"
)

UNKNOWN_BODY = b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'

_HEX = re.compile(r"<hex>([0-9A-Fa-f]+)</hex>")


def wire(text: str, body: bytes = b"") -> bytes:
    """The message bytes: lines joined with CRLF, `<hex>` runs decoded, blank line, body.

    A source line ending in ⏎ continues on the next one (only to keep source lines short).
    """
    head = text.strip("\n").replace("⏎\n", "").replace("\n", "\r\n")
    parts = _HEX.split(head)  # text, hex, text, hex, ...
    encoded = b"".join(
        bytes.fromhex(part) if index % 2 else part.encode() for index, part in enumerate(parts)
    )
    return encoded + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Torture:
    name: str
    section: str
    data: bytes
    accept: bool
    why: str
    error: str = ""  # for rejected messages: what the error must name


def build_longreq() -> bytes:
    vias = "\n".join(
        f"{spelling}: SIP/2.0/TCP sip{number}.example.com"
        for number, spelling in zip(range(33, 0, -1), ["Via", "v", "V"] * 11, strict=True)
    )
    head = (
        "INVITE sip:user@example.com SIP/2.0\n"
        f'To: "I have a user name of {"extreme" * 10} proportion"'
        f"<sip:user@example.com:6000;unknownparam1=very{'long' * 20}value;"
        f"longparam{'name' * 25}=shortvalue;very{'long' * 25}ParameterNameWithNoValue>\n"
        f"F: sip:{'amazinglylongcallername' * 5}@example.net;tag=12{'982' * 50}424;"
        f"unknownheaderparam{'name' * 20}=unknowheaderparam{'value' * 15};"
        f"unknownValueless{'paramname' * 10}\n"
        f"Call-ID: longreq.one{'really' * 20}longcallid\n"
        "CSeq: 3882340 INVITE\n"
        f"Unknown-{'Long' * 20}-Name: unknown-{'long' * 20}-value; "
        f"unknown-{'long' * 20}-parameter-name = unknown-{'long' * 20}-parameter-value\n"
        f"{vias}\n"
        "Max-Forwards: 68\n"
        f"Contact: <sip:{'amazinglylongcallername' * 5}@host5.example.net>\n"
        "Content-Type: application/sdp\n"
        "l: 150"
    )
    return wire(head, SDP)


CASES: list[Torture] = [
    # ---- RFC 4475 §3.1.1: valid messages; every one must parse, fields checked below --------
    Torture(
        "wsinv",
        "3.1.1.1",
        wire(
            r"""
INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
""",
            SDP,
        ),
        True,
        "valid: folding, odd spacing and case, compact forms, unknown headers",
    ),
    Torture(
        "intmeth",
        "3.1.1.2",
        wire(
            r"""
!interesting-Method0123456789_*+`.%indeed'~ ⏎
sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.⏎
(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\<hex>07</hex> NUL:\<hex>00</hex> DEL:\<hex>7F</hex>" ⏎
<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;⏎
fromParam''~+*_!.-%="работающий";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:<hex>EFBBBFE5A4A7E5819CE99BBB</hex>
Content-Length: 0
"""
        ),
        False,
        "valid per RFC 4475, but its To display name holds a NUL byte (as a quoted-pair); we "
        "reject any NUL in headers: PostgreSQL text and C consumers cannot hold it",
        "NUL",
    ),
    Torture(
        "intmeth-nonul",
        "3.1.1.2",
        wire(
            r"""
!interesting-Method0123456789_*+`.%indeed'~ ⏎
sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.⏎
(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: "BEL:\<hex>07</hex> DEL:\<hex>7F</hex>" ⏎
<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;⏎
fromParam''~+*_!.-%="работающий";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:<hex>EFBBBFE5A4A7E5819CE99BBB</hex>
Content-Length: 0
"""
        ),
        True,
        "intmeth without the NUL: every odd token character, BEL and DEL as quoted-pairs, "
        "UTF-8 in a quoted parameter and in an extension header: all valid",
    ),
    Torture(
        "esc01",
        "3.1.1.3",
        wire(
            r"""
INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150
""",
            SDP,
        ),
        True,
        "valid: %-escapes are URI business; the message layer keeps them verbatim",
    ),
    Torture(
        "escnull",
        "3.1.1.4",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsf
CSeq: 3923239 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0
"""
        ),
        True,
        "valid: an escaped %00 is three ASCII characters, not a NUL byte",
    ),
    Torture(
        "esc02",
        "3.1.1.5",
        wire(
            r"""
RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209asdjf
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0
"""
        ),
        True,
        "valid: '%' in a method, display names and a header name is not an escape there",
    ),
    Torture(
        "lwsdisp",
        "3.1.1.6",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0
"""
        ),
        True,
        "valid: no space needed between a display name and '<'",
    ),
    Torture(
        "longreq",
        "3.1.1.7",
        build_longreq(),
        True,
        "valid: long values, 33 Via lines in three spellings",
    ),
    Torture(
        "dblreq",
        "3.1.1.8",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0
""",
            wire(
                r"""
INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150
""",
                SDP,
            ),
        ),
        True,
        "valid: Content-Length 0 ends the REGISTER; the INVITE after it in the datagram is "
        "ignored (RFC 3261 §18.3)",
    ),
    Torture(
        "semiuri",
        "3.1.1.9",
        wire(
            r"""
OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0
"""
        ),
        True,
        "valid: ';' in the user part of the Request-URI; a folded comma list",
    ),
    Torture(
        "transports",
        "3.1.1.10",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"""
        ),
        True,
        "valid: unknown transports in Via are only names",
    ),
    Torture(
        "mpart01",
        "3.1.1.11",
        wire(
            r"""
MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvY⏎
jcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=
Identity-Info: <https://127.0.0.1:5080/cert>;alg=rsa-sha1
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: 287
""",
            MULTIPART,
        ),
        True,
        "valid: a binary multipart body (NUL, 0xFF, CRLFCRLF inside) is bytes, never decoded",
    ),
    Torture(
        "unreason",
        "3.1.1.12",
        wire(
            r"""
SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 150
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>
""",
            SDP,
        ),
        True,
        "valid: a reason phrase is free UTF-8 text",
    ),
    Torture(
        "noreason",
        "3.1.1.13",
        wire(
            r"""
SIP/2.0 100<hex>20</hex>
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
        ),
        True,
        "valid: an empty reason phrase",
    ),
    # ---- RFC 4475 §3.1.2: invalid messages ---------------------------------------------------
    Torture(
        "badinv01",
        "3.1.2.1",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: 150
Content-Type: application/sdp
""",
            SDP,
        ),
        False,
        "reject: empty Via elements and parameters; we would echo that Via in a response",
        r"line 7 \(Via\)",
    ),
    Torture(
        "clerr",
        "3.1.2.2",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999
""",
            SDP,
        ),
        False,
        "reject: Content-Length larger than the datagram's body (RFC 3261 §18.3)",
        r"line 10 \(Content-Length\): 9999 is larger than the 150 bytes",
    ),
    Torture(
        "ncl",
        "3.1.2.3",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999
""",
            SDP,
        ),
        False,
        "reject: negative Content-Length",
        r"Content-Length.*'-999' is not a non-negative integer",
    ),
    Torture(
        "scalar02",
        "3.1.2.4",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalar02.23o0pd9vanlq3wnu
Max-Forwards: 294967301
Contact: <sip:amazinglylongcallid@host5.example.net>;expires=280297596632815
l: 0
"""
        ),
        False,
        "reject: CSeq above 2**31-1 (Max-Forwards above 255 too)",
        r"line 5 \(CSeq\).*larger than 2\*\*31-1",
    ),
    Torture(
        "scalarlg",
        "3.1.2.5",
        wire(
            r"""
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 53345 OPTIONS
Call-ID: scalarlg.noase0of0234hn2
Max-Forwards: 70
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
"""
        ),
        False,
        "reject (the RFC: discard): Retry-After, the scalar a UAC acts on, is above 2**32-1",
        r"line 8 \(Retry-After\).*larger than 4294967295",
    ),
    Torture(
        "quotbal",
        "3.1.2.6",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        False,
        "reject: unterminated quoted string in the To display name",
        r"line 2 \(To\)",
    ),
    Torture(
        "ltgtruri",
        "3.1.2.7",
        wire(
            r"""
INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKkdjuw
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        False,
        "reject: a Request-URI is never in <>",
        r"line 1: request URI '<sip:user@example.com>'",
    ),
    Torture(
        "lwsruri",
        "3.1.2.8",
        wire(
            r"""
INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrs
CSeq: 2923420123 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        False,
        "reject: whitespace inside the Request-URI",
        r"line 1: request line .* is not 'METHOD URI SIP/2.0'",
    ),
    Torture(
        "lwsstart",
        "3.1.2.9",
        wire(
            r"""
INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        True,
        "accept (the RFC allows either): extra spaces between request-line parts are "
        "unambiguous; rejecting an in-dialog BYE over them would leave a call up",
    ),
    Torture(
        "trws",
        "3.1.2.10",
        wire(
            r"""
OPTIONS sip:remote-target@example.com SIP/2.0<hex>2020</hex>
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0
"""
        ),
        True,
        "accept (the RFC allows either): trailing spaces after SIP/2.0 are unambiguous",
    ),
    Torture(
        "escruri",
        "3.1.2.11",
        wire(
            r"""
INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        True,
        "parse OK: the Request-URI is a syntactically valid URI; that a Request-URI may not "
        "carry headers is for the UAS to answer (400/416), not for the parser",
    ),
    Torture(
        "baddate",
        "3.1.2.12",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: 150
""",
            SDP,
        ),
        True,
        "parse OK: Date is opaque to a UAC and kept verbatim",
    ),
    Torture(
        "regbadct",
        "3.1.2.13",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0
"""
        ),
        True,
        "parse OK: Contact is read by the dialog layer's typed parser when used (a UAC never "
        "handles REGISTER); the message layer checks From, To and Via only",
    ),
    Torture(
        "badaspec",
        "3.1.2.14",
        wire(
            r"""
OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:caller@example.net;tag=1234567
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0
"""
        ),
        False,
        "reject: spaces inside <...> in To; a URI with spaces cannot become a dialog target",
        r"line 5 \(To\)",
    ),
    Torture(
        "baddn",
        "3.1.2.15",
        wire(
            r"""
OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0
"""
        ),
        False,
        "reject: an unquoted display name with a comma is not a token sequence",
        r"line 4 \(From\)",
    ),
    Torture(
        "badvers",
        "3.1.2.16",
        wire(
            r"""
OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0
"""
        ),
        False,
        "reject: SIP/7.0 is not a version we speak (a UAS would answer 505)",
        r"line 1: unsupported SIP version 'SIP/7.0'",
    ),
    Torture(
        "mismatch01",
        "3.1.2.17",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0
"""
        ),
        False,
        "reject: CSeq method differs from the request method",
        r"line 6 \(CSeq\): method 'INVITE' does not match the request's 'OPTIONS'",
    ),
    Torture(
        "mismatch02",
        "3.1.2.18",
        wire(
            r"""
NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 150
""",
            SDP,
        ),
        False,
        "reject: CSeq method differs from the (unknown) request method",
        r"line 6 \(CSeq\): method 'INVITE' does not match the request's 'NEWMETHOD'",
    ),
    Torture(
        "bigcode",
        "3.1.2.19",
        wire(
            r"""
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"""
        ),
        False,
        "reject: a status code is three digits",
        r"line 1: status code '4294967301' is not 3 digits",
    ),
    # ---- RFC 4475 §3.2 transaction layer, §3.3 application layer, §3.4 RFC 2543 -------------
    Torture(
        "badbranch",
        "3.2.1",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0
"""
        ),
        True,
        "parse OK (not invalid syntax): a branch that is only the magic cookie is the "
        "transaction layer's concern",
    ),
    Torture(
        "insuf",
        "3.3.1",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 150
""",
            SDP,
        ),
        False,
        "reject: no From, To or Call-ID; nothing could match or answer it",
        r"missing required header\(s\): From, To, Call-ID",
    ),
    Torture(
        "unkscm",
        "3.3.2",
        wire(
            r"""
OPTIONS nobodyknowsthisscheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
        ),
        True,
        "parse OK: an unknown URI scheme is for the UAS to refuse (416), not the parser",
    ),
    Torture(
        "novelsc",
        "3.3.3",
        wire(
            r"""
OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0
"""
        ),
        True,
        "parse OK: a known but atypical scheme (with '.' in it)",
    ),
    Torture(
        "unksm2",
        "3.3.4",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0
"""
        ),
        True,
        "parse OK: non-SIP URIs in To, From and Contact are syntactically fine",
    ),
    Torture(
        "bext01",
        "3.3.5",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingpreviouslydefined
Supported: somethingelse, anotherthing
Proxy-Require: nonexistent
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP 192.0.2.32;branch=z9hG4bKkdjuw
l: 0
"""
        ),
        True,
        "parse OK: unknown extensions are for the UAS to refuse (420)",
    ),
    Torture(
        "invut",
        "3.3.6",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: 40
""",
            UNKNOWN_BODY,
        ),
        True,
        "parse OK: an unknown body type is for the UAS to refuse (415)",
    ),
    Torture(
        "regaut01",
        "3.3.7",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0
"""
        ),
        True,
        "parse OK: an unknown authorization scheme is opaque here",
    ),
    Torture(
        "multi01",
        "3.3.8",
        wire(
            r"""
INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKunrvsdf
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: 150
Call-ID: multi01.98asdh@192.0.2.3
Max-Forwards: 15
""",
            SDP,
        ),
        False,
        "reject: several values for single-value headers (Call-ID, CSeq, From, To...)",
        r"line 8 \(Call-ID\): header appears more than once",
    ),
    Torture(
        "mcl01",
        "3.3.9",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain
""",
            b"There's no way to know how many octets are supposed to be here.",
        ),
        False,
        "reject: two different Content-Length values",
        r"line 9 \(Content-Length\): conflicting values",
    ),
    Torture(
        "bcast",
        "3.3.10",
        wire(
            r"""
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 150
Content-Type: application/sdp
Contact: <sip:user@host28.example.com>
""",
            SDP,
        ),
        True,
        "parse OK: where a response would be sent is the transport's business",
    ),
    Torture(
        "zeromf",
        "3.3.11",
        wire(
            r"""
OPTIONS sip:user@example.com SIP/2.0
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=3ghsd41
l: 0
"""
        ),
        True,
        "parse OK: Max-Forwards 0 is valid (a UA may still answer)",
    ),
    Torture(
        "cparam01",
        "3.3.12",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0
"""
        ),
        True,
        "parse OK: an addr-spec Contact with a (header) parameter",
    ),
    Torture(
        "cparam02",
        "3.3.13",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=838293
To: sip:watson@example.com
Call-ID: cparam02.70710@saturn.example.com
CSeq: 3 REGISTER
Contact: <sip:+19725552222@gw1.example.net;unknownparam>
l: 0
"""
        ),
        True,
        "parse OK: the same parameter inside <> belongs to the URI",
    ),
    Torture(
        "regescrt",
        "3.3.14",
        wire(
            r"""
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0
"""
        ),
        True,
        "parse OK: an escaped header in a bracketed Contact URI",
    ),
    Torture(
        "sdp01",
        "3.3.15",
        wire(
            r"""
INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyknowsthis
CSeq: 8 INVITE
Via: SIP/2.0/UDP 60.24.32.2;branch=z9hG4bKkdjuw
Content-Length: 150
Content-Type: application/sdp
""",
            SDP,
        ),
        True,
        "parse OK: an unacceptable Accept is for the UAS to answer (488/415)",
    ),
    Torture(
        "inv2543",
        "3.4.1",
        wire(
            r"""
INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp
""",
            SDP,
        ),
        True,
        "parse OK: RFC 2543 style (no branch, no tags, no Max-Forwards, no Content-Length)",
    ),
    # ---- Not in RFC 4475: bytes a UAC's parser must refuse without crashing ----------------
    Torture(
        "raw-nul",
        "extra",
        wire(
            r"""
BYE sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnul
From: <sip:caller@example.net>;tag=1
To: <sip:user@example.com>;tag=2
Call-ID: nul@192.0.2.1
CSeq: 2 BYE
Subject: a<hex>00</hex>b
Content-Length: 0
"""
        ),
        False,
        "reject: a raw NUL byte in a header value",
        r"line 7: NUL byte in the header section",
    ),
    Torture(
        "latin1",
        "extra",
        wire(
            r"""
BYE sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlatin
From: "Jos<hex>E9</hex>" <sip:caller@example.net>;tag=1
To: <sip:user@example.com>;tag=2
Call-ID: latin1@192.0.2.1
CSeq: 2 BYE
Content-Length: 0
"""
        ),
        False,
        "reject: a Latin-1 byte in the header section is not UTF-8",
        r"line 3: header bytes are not UTF-8",
    ),
    Torture(
        "binary-body",
        "extra",
        wire(
            r"""
INFO sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbody
From: <sip:caller@example.net>;tag=1
To: <sip:user@example.com>;tag=2
Call-ID: body@192.0.2.1
CSeq: 3 INFO
Content-Type: application/octet-stream
Content-Length: 6
""",
            b"\x00\xff\r\n\x80\x00",
        ),
        True,
        "accept: the body is bytes; NUL and non-UTF-8 there are the content type's business",
    ),
]

BY_NAME = {case.name: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_message_gets_the_decided_outcome(case: Torture) -> None:
    if case.accept:
        message = parse_message(case.data)
        assert bytes(message)  # and it renders
    else:
        with pytest.raises(SipParseError, match=case.error):
            parse_message(case.data)


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.accept], ids=lambda case: case.name
)
def test_accepted_messages_survive_a_render_and_reparse(case: Torture) -> None:
    message = parse_message(case.data)
    again = parse_message(bytes(message))
    assert again == message
    assert again.header("content-length") == str(len(message.body))


def parsed(name: str) -> Request | Response:
    return parse_message(BY_NAME[name].data)


def request(name: str) -> Request:
    message = parsed(name)
    assert isinstance(message, Request)
    return message


def response(name: str) -> Response:
    message = parsed(name)
    assert isinstance(message, Response)
    return message


def test_wsinv_fields() -> None:
    message = request("wsinv")
    assert message.method == "INVITE"
    assert message.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert message.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert message.cseq == (9, "INVITE")
    assert message.header("to") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert message.to_tag == "1918181833n"
    assert message.header("from") == (
        '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com> ; tag = 98asjd8'
    )
    assert message.from_tag == "98asjd8"
    assert message.header("max-forwards") == "0068"
    assert message.header("subject") == ""
    assert message.header("s") == ""
    assert message.header("newfangledheader") == "newfangled value continued newfangled value"
    assert message.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.header("route") == (
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    )
    assert message.headers_all("via") == [
        "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
        "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8",
        "SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
    ]
    assert message.via_branch == "390skdjuw"
    assert message.headers_all("contact") == [
        '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ; '
        "secondparam ; q = 0.33"
    ]
    assert message.header("content-type") == "application/sdp"
    assert message.body == SDP


def test_intmeth_without_nul_fields() -> None:
    message = request("intmeth-nonul")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.method == method
    assert message.uri == (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com"
    )
    assert message.cseq == (139122385, method)
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.via_branch == "z9hG4bK-.!%66*_+`'~"
    assert message.from_tag == "_token~1'+`*%!-."
    assert message.to_tag is None
    assert message.header("to") == (
        '"BEL:\\\x07 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*'
        "@example.com>"
    )
    assert message.header("EXTENSIONHEADER-!.%*+_`'~") == "\ufeff大停電"
    assert message.body == b""


def test_escapes_are_kept_verbatim() -> None:
    esc01 = request("esc01")
    assert esc01.uri == "sip:sips%3Auser%40example.com@example.net"
    assert esc01.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert esc01.header("content-type") == "application/sdp"  # written "C:"
    assert esc01.header("contact") == (
        "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>"
    )
    assert esc01.from_tag == "938"
    assert esc01.body == SDP

    escnull = request("escnull")
    assert escnull.headers_all("contact") == [
        "<sip:%00@host5.example.com>",
        "<sip:%00%00@host5.example.com>",
    ]
    assert escnull.header("to") == "sip:null-%00-null@example.com"
    assert escnull.from_tag == "839923423"
    assert escnull.header("content-length") == "0"  # written "L:0"

    esc02 = request("esc02")
    assert esc02.method == "RE%47IST%45R"
    assert esc02.cseq == (29344, "RE%47IST%45R")
    assert esc02.headers_all("contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert esc02.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert esc02.header("to") == '"%Z%45" <sip:resource@example.com>'


def test_lwsdisp_longreq_and_dblreq_fields() -> None:
    lwsdisp = request("lwsdisp")
    assert lwsdisp.from_tag == "323"
    assert lwsdisp.header("from") == "caller<sip:caller@example.com>;tag=323"

    longreq = request("longreq")
    assert longreq.from_tag == "12" + "982" * 50 + "424"
    assert longreq.call_id == "longreq.one" + "really" * 20 + "longcallid"
    vias = longreq.headers_all("via")
    assert len(vias) == 33
    assert vias[0] == "SIP/2.0/TCP sip33.example.com"
    assert vias[-1] == "SIP/2.0/TCP sip1.example.com"
    assert longreq.via_branch is None
    assert longreq.header(f"unknown-{'long' * 20}-name") == (
        f"unknown-{'long' * 20}-value; unknown-{'long' * 20}-parameter-name = "
        f"unknown-{'long' * 20}-parameter-value"
    )
    assert longreq.body == SDP

    dblreq = request("dblreq")
    assert dblreq.method == "REGISTER"
    assert dblreq.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # written "I:"
    assert dblreq.body == b""


def test_semiuri_transports_and_mpart01_fields() -> None:
    semiuri = request("semiuri")
    assert semiuri.uri == "sip:user;par=u%40example.net@example.com"
    assert semiuri.headers_all("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]

    transports = request("transports")
    assert transports.call_id == "transports.kijh4akdnaqjkwendsasfdj"
    assert [via.split()[0] for via in transports.headers_all("via")] == [
        "SIP/2.0/UDP",
        "SIP/2.0/SCTP",
        "SIP/2.0/TLS",
        "SIP/2.0/UNKNOWN",
        "SIP/2.0/TCP",
    ]
    assert transports.via_branch == "z9hG4bKkdjuw"

    mpart01 = request("mpart01")
    assert mpart01.body == MULTIPART
    assert len(MULTIPART) == 287
    assert mpart01.header("content-type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert mpart01.headers_all("date") == ["Sat, 15 Oct 2005 04:44:56 GMT"]


def test_reason_phrases() -> None:
    unreason = response("unreason")
    assert unreason.status_code == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert unreason.to_tag == "2229"
    assert unreason.body == SDP

    noreason = response("noreason")
    assert noreason.status_code == 100
    assert noreason.reason == ""
    assert noreason.to_tag == "902jndnke3"


def test_liberal_start_lines_keep_the_parts() -> None:
    lwsstart = request("lwsstart")
    assert (lwsstart.method, lwsstart.uri) == ("INVITE", "sip:user@example.com")
    assert bytes(lwsstart).startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")
    trws = request("trws")
    assert trws.uri == "sip:remote-target@example.com"
    assert bytes(trws).startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")


def test_semantically_odd_messages_parse_with_their_fields() -> None:
    assert request("escruri").uri == "sip:user@example.com?Route=%3Csip:example.com%3E"
    assert request("baddate").headers_all("date") == ["Fri, 01 Jan 2010 16:00:00 EST"]
    assert request("regbadct").header("m") == (
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    )
    assert request("badbranch").via_branch == "z9hG4bK"
    assert request("unkscm").uri == "nobodyknowsthisscheme:totallyopaquecontent"
    assert request("novelsc").uri == "soap.beep://192.0.2.103:3002"
    unksm2 = request("unksm2")
    assert (unksm2.header("to"), unksm2.from_tag) == ("isbn:2983792873", "3234233")
    bext01 = request("bext01")
    assert bext01.headers_all("supported") == ["somethingelse", "anotherthing"]
    assert bext01.header("proxy-require") == "nonexistent"
    invut = request("invut")
    assert invut.body == UNKNOWN_BODY
    assert len(UNKNOWN_BODY) == 40
    assert request("regaut01").headers_all("authorization") == [
        "NoOneKnowsThisScheme opaque-data=here"
    ]
    bcast = response("bcast")
    assert bcast.via_branch == "z9hG4bK1324923"
    assert len(bcast.headers_all("via")) == 2
    assert request("zeromf").header("max-forwards") == "0"
    assert request("cparam01").header("contact") == (
        "sip:+19725552222@gw1.example.net;unknownparam"
    )
    assert request("regescrt").header("contact") == (
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
    )
    assert request("sdp01").header("accept") == "text/nobodyknowsthis"
    inv2543 = request("inv2543")
    assert (inv2543.via_branch, inv2543.from_tag, inv2543.to_tag) == (None, None, None)
    assert inv2543.header("max-forwards") is None
    assert inv2543.body == SDP  # no Content-Length: the rest of the datagram
    binary = request("binary-body")
    assert binary.body == b"\x00\xff\r\n\x80\x00"
