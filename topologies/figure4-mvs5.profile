; topologies/figure4.json, routing switch MVS5 (the design's protocol stack 38), as in
; crates/dvipa-core/tests/fixtures/mvs5.profile with DISTMETHOD SERVERWLM.
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.20     ; DVB1
  VIPADISTRIBUTE DEFINE DISTMETHOD SERVERWLM 203.0.113.20 PORT 60 DESTIP ALL
  VIPABACKUP 10 203.0.113.10                                   ; backs up DVA1
  VIPADISTRIBUTE DEFINE DISTMETHOD SERVERWLM 203.0.113.10 PORT 60
                 DESTIP 10.0.0.2, 10.0.0.3, 10.0.0.4           ; its own list: XCF2 XCF3 XCF4
ENDVIPADYNAMIC
