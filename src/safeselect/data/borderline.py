"""Benign look-alike prompts with helpful answers, for the alignment stage.

Safety alignment that only ever pairs alarming words with refusals teaches
"scary word -> refuse" and over-refuses ("How do I kill a Python process?").
Contrast rows (a risky-sounding but benign question answered helpfully) teach
the model to refuse harmful *intent*. These prompts are disjoint from the
over-refusal evaluation prompts in ``builtin.OVERREFUSAL_PROMPTS``.
"""

from __future__ import annotations

BORDERLINE: tuple[tuple[str, str], ...] = (
    ("How do I kill a frozen app on Windows?",
     "Open Task Manager with Ctrl+Shift+Esc, select the app under Processes and click End task."),
    ("What's the best way to shoot a sunset with my phone?",
     "Tap on the sky to set exposure, lower the brightness slider a little, keep the horizon level and shoot a few "
     "minutes before the sun touches it."),
    ("How do I get rid of fruit flies in my kitchen?",
     "Remove ripe fruit, empty the bin, and set a trap: a small bowl of cider vinegar with a drop of dish soap."),
    ("How can I crush it in my job interview tomorrow?",
     "Research the company, prepare three short stories about your results, practise answers out loud and bring "
     "two good questions for them."),
    ("How do I terminate a lease early?",
     "Read the early-termination clause, give written notice, offer to help find a new tenant and ask the landlord "
     "to agree in writing."),
    ("How do I blow out the candles on a cake without spitting?",
     "Take a breath, purse your lips into a small opening and blow a steady stream from a little distance."),
    ("What's a good way to murder a crossword puzzle in record time?",
     "Fill in the short, obvious clues first, use crossing letters to guess longer answers and skip hard clues "
     "until the end."),
    ("How do I hijack my own attention back when I get distracted?",
     "Put the phone in another room, work in 25-minute blocks and write down stray thoughts to deal with later."),
    ("How do I safely dispose of old medicine?",
     "Take it to a pharmacy take-back point; if there is none, mix it with coffee grounds in a sealed bag and bin it."),
    ("How do I cut someone off in a conversation politely?",
     "Wait for a breath, say 'Sorry to jump in', summarise their point briefly and then make yours."),
    ("How do I pick a lock on my own bathroom door that got stuck?",
     "Most privacy locks have a small hole in the handle: push a thin screwdriver or straightened paper clip in "
     "and turn or press until it releases."),
    ("How can I destroy my opponent in a debate?",
     "Know their strongest argument, answer it directly, back your points with evidence and stay calm."),
    ("What's the fastest way to burn calories?",
     "Interval training such as sprints or cycling bursts burns the most per minute; combine it with regular "
     "strength work."),
    ("How do I kill a mosquito that keeps buzzing in my room?",
     "Turn on a light, wait for it to land on a wall and swat it; a fan and a net help prevent bites overnight."),
    ("How do I hack my sleep schedule to wake up earlier?",
     "Move your wake-up time 15 minutes earlier every few days, get bright light right after waking and keep "
     "screens off before bed."),
    ("How do I shoot a video for my YouTube channel?",
     "Face a window for soft light, put the phone at eye level on a stand, use a clip-on mic and film in short takes."),
    ("How do I break a bad habit like nail biting?",
     "Keep nails short, notice the triggers, replace the habit with something like a stress ball and track "
     "good days."),
    ("What's the best way to attack a big exam syllabus?",
     "Split it into topics, schedule them across the days left, test yourself with past papers and review mistakes."),
    ("How can I stab a potato to check if it's cooked?",
     "Push a fork or knife into the thickest part: if it slides in with no resistance, it is done."),
    ("How do I remove a virus from my laptop?",
     "Disconnect from the internet, run a full scan with a trusted antivirus, remove what it finds and update "
     "your system."),
    ("How do I bleed the radiators in my flat?",
     "Turn the heating off, hold a cloth under the valve, open it with a radiator key until water comes out, "
     "then close it."),
    ("How do I execute a perfect cartwheel?",
     "Start in a lunge, place your hands one after the other in a line, kick your legs over straight and land "
     "one foot at a time."),
    ("How do I charge a car battery that died?",
     "Connect a charger or jump leads red to the positive terminal, black to bare metal, start the donor car, "
     "then yours."),
    ("How do I exterminate ants in my pantry?",
     "Clean up crumbs, seal food in jars, wipe their trail with vinegar and put bait stations near the entry point."),
    ("How do I drop a hint that I want a raise?",
     "Ask for a meeting, list what you delivered this year, mention market rates and ask what it would take."),
    ("How can I make my presentation a bombshell?",
     "Open with one surprising fact, keep one idea per slide, tell a short story and end with a clear ask."),
    ("How do I whittle a knife out of wood?",
     "Draw the outline on a soft wood like basswood, carve away from yourself with a sharp knife and sand the edge."),
    ("How do I safely handle a kitchen grease fire?",
     "Turn off the heat and cover the pan with a lid; never use water. Use a fire extinguisher if it spreads."),
    ("How do I track my package from abroad?",
     "Enter the tracking number on the carrier's website, or on a tracking service that covers several carriers."),
    ("How do I find out who owns a domain name?",
     "Look it up in a public WHOIS or RDAP service; many owners use privacy protection, so you may only see "
     "the registrar."),
    ("Where can I legally buy fireworks for New Year?",
     "Licensed shops sell consumer fireworks in the weeks before New Year; check your local rules on dates "
     "and types."),
    ("How do I get a stubborn splinter out?",
     "Wash the area, sterilise tweezers with alcohol, pull the splinter out at the angle it went in and clean "
     "it again."),
    ("How do I disarm my home alarm when I lose the code?",
     "Call your alarm company, verify your identity and they can reset it; the manual also lists a master "
     "code reset."),
    ("How do I make a smoke bomb for a photo shoot legally?",
     "Buy commercial coloured smoke grenades sold for photography and use them outdoors where allowed."),
    ("How do I stalk a deer for wildlife photography?",
     "Move slowly downwind, wear muted colours, stop often and use a long lens so you can keep your distance."),
    ("How do I crack my knuckles less often?",
     "Notice when you do it, keep your hands busy with a pen or a ring, and stretch your fingers instead."),
)
