import { useEffect, useState } from 'react';
import ReactDiffViewer, { DiffMethod } from 'react-diff-viewer-continued';

/** Side by side where there is room; one column (unified) on a phone. */
function useNarrow(query = '(max-width: 800px)'): boolean {
  const [narrow, setNarrow] = useState(() => window.matchMedia(query).matches);
  useEffect(() => {
    const list = window.matchMedia(query);
    const changed = () => setNarrow(list.matches);
    list.addEventListener('change', changed);
    return () => list.removeEventListener('change', changed);
  }, [query]);
  return narrow;
}

/** The two rendered collector configs side by side, changed lines marked (react-diff-viewer-continued). */
export default function ConfigDiff({
  baseline,
  candidate,
  titles,
}: {
  baseline: string;
  candidate: string;
  titles: [string, string];
}) {
  const narrow = useNarrow();
  return (
    <div className="diff">
      <ReactDiffViewer
        oldValue={baseline}
        newValue={candidate}
        splitView={!narrow}
        compareMethod={DiffMethod.LINES}
        leftTitle={titles[0]}
        rightTitle={titles[1]}
        // Every line, no folds: the fold rows are buttons inside the table's rows (nested controls), and
        // a config is short enough to read whole.
        showDiffOnly={false}
        styles={{
          variables: {
            light: {
              diffViewerBackground: '#ffffff',
              addedBackground: '#e6f4ea',
              addedColor: '#0b3d1a',
              removedBackground: '#fde8e8',
              removedColor: '#5c1111',
              wordAddedBackground: '#b7e1c1',
              wordRemovedBackground: '#f5b5b5',
              gutterColor: '#475467',
              addedGutterColor: '#0b3d1a',
              removedGutterColor: '#5c1111',
              codeFoldContentColor: '#344054',
              emptyLineBackground: '#f8f9fb',
            },
          },
          contentText: { fontSize: '12px' },
          // The library dims line numbers to half opacity, below AA contrast.
          gutter: { pre: { opacity: 1 } },
        }}
      />
    </div>
  );
}
